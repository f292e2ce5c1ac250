using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Grains.Shards;
using Shears.Pruning.Allocation;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Schedules;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Grains.Runs;

/// <summary>
/// The coordinator of one run. It reads only the checkpoint's manifest, plans the shards, and drives
/// the rounds from per-shard statistics; weights never pass through it. Calls return at once and the
/// run proceeds in the background of this activation.
/// </summary>
[Reentrant]
[CoordinatorPlacement]
public sealed class RunGrain(
    [PersistentState("run", ShearsStorage.Name)] IPersistentState<RunGrainState> state,
    ManifestCache manifests,
    IOptions<ShearsOptions> options,
    ILocalSiloDetails silo,
    ILogger<RunGrain> logger) : Grain, IRunGrain
{
    private CancellationTokenSource? _cancel;
    private Task? _job;

    private string RunId => this.GetPrimaryKeyString();
    private RunStatus Status => state.State.Status ?? new RunStatus { RunId = RunId };

    async Task<RunStatus> IRunGrain.StartAsync(RunSpec given)
    {
        if (state.State.Status is { } existing)
        {
            if (existing.Spec is { } asked && asked.SameAs(given)) return existing;
            throw new RunRejectedException($"run id '{RunId}' is already taken by another run");
        }
        var errors = RunOptions.Validate(given);
        if (errors.Count > 0) throw new RunRejectedException(string.Join("; ", errors));
        var spec = given with { ModelPath = Path.GetFullPath(given.ModelPath), OutputPath = Path.GetFullPath(given.OutputPath) };
        CheckPaths(spec);

        CheckpointManifest manifest;
        try { manifest = manifests.Get(spec.ModelPath); }
        catch (CheckpointFormatException e) { throw new RunRejectedException(e.Message); }
        var plan = RunPlanner.Plan(manifest, spec);
        double[] targets;
        try { targets = Schedule.Targets(ParseSchedule(spec.Schedule), spec.Sparsity, spec.Rounds); }
        catch (ArgumentException e) { throw new RunRejectedException(e.Message); }

        // Read, tokenized and checked before the run starts; the job takes them from here unless the grain restarted.
        _tokenIds = LoadTokenIds(spec, manifest);
        state.State.Plan = plan;
        state.State.StateDirectory = Path.Combine(Path.GetDirectoryName(spec.OutputPath)!, $".shears-state-{RunId}");
        state.State.Status = new RunStatus
        {
            RunId = RunId, State = RunState.Running, Phase = "loading", Spec = given,
            TotalRounds = targets.Length, PrunableWeights = plan.PrunableWeights, Shards = plan.Shards.Count,
            StartedAt = DateTimeOffset.UtcNow,
        };
        await state.WriteStateAsync();
        await GrainFactory.GetGrain<IRunRegistryGrain>(0).RegisterAsync(RunId);
        ShearsMetrics.RunState(RunId, "running");
        StartJob(spec, manifest, targets);
        return Status;
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // A coordinator that was lost mid-run resumes from its persisted state.
        if (state.State.Status is { IsFinished: false, Spec: { } given } && state.State.Plan is not null)
        {
            var spec = given with { ModelPath = Path.GetFullPath(given.ModelPath), OutputPath = Path.GetFullPath(given.OutputPath) };
            logger.LogInformation("Run {Run} resumes after round {Round}", RunId, state.State.CommittedRound);
            var manifest = manifests.Get(spec.ModelPath);
            var targets = Schedule.Targets(ParseSchedule(spec.Schedule), spec.Sparsity, spec.Rounds);
            StartJob(spec, manifest, targets);
        }
        return Task.CompletedTask;
    }

    private void StartJob(RunSpec spec, CheckpointManifest manifest, double[] targets)
    {
        _cancel = new CancellationTokenSource();
        var token = _cancel.Token;
        _job = RunJobAsync(spec, manifest, targets, token);
    }

    private void CheckPaths(RunSpec spec)
    {
        var roots = options.Value.DataRoots.Select(r => Path.GetFullPath(r).TrimEnd('/') + "/").ToArray();
        if (roots.Length > 0)
        {
            foreach (var (option, path) in new[] { ("--model", spec.ModelPath), ("--out", spec.OutputPath) })
                if (!roots.Any(r => (path.TrimEnd('/') + "/").StartsWith(r, StringComparison.Ordinal)))
                    throw new RunRejectedException($"{option} '{path}' lies outside the silo's data roots ({string.Join(", ", roots)})");
        }
        if (!File.Exists(spec.ModelPath) && !Directory.Exists(spec.ModelPath))
            throw new RunRejectedException($"--model '{spec.ModelPath}' does not exist");
        if (File.Exists(spec.OutputPath))
            throw new RunRejectedException($"--out '{spec.OutputPath}' is a file; give a folder");
        if (Directory.Exists(spec.OutputPath) && Directory.EnumerateFileSystemEntries(spec.OutputPath).Any() && !spec.Force)
            throw new RunRejectedException($"--out '{spec.OutputPath}' exists and is not empty (use --force to replace it)");
        string full = spec.OutputPath.TrimEnd('/') + "/";
        string model = Directory.Exists(spec.ModelPath) ? spec.ModelPath.TrimEnd('/') + "/" : Path.GetDirectoryName(spec.ModelPath)! + "/";
        if (model.StartsWith(full, StringComparison.Ordinal) || full.StartsWith(model, StringComparison.Ordinal) && Directory.Exists(spec.ModelPath) && full == model)
            throw new RunRejectedException($"--out '{spec.OutputPath}' must not be the model's folder or contain it");
    }

    /// <summary>
    /// A decoder's token-id sequences from <paramref name="path"/> (a .json file of id arrays, or text tokenized by the
    /// checkpoint's own tokenizer), every id checked against the model's vocabulary.
    /// </summary>
    private static IReadOnlyList<long[]> DecoderTokenIds(string path, RunSpec spec, Func<Shears.Pruning.Models.CheckpointTokenizer> tokenizer, int vocab)
    {
        var sequences = Shears.Pruning.Models.EvalData.LoadTokenIds(path, spec.EvalSeqLen, tokenizer);
        for (int s = 0; s < sequences.Count; s++)
        {
            int bad = Array.FindIndex(sequences[s], id => id >= vocab);
            if (bad >= 0)
                throw new InvalidDataException($"'{path}', sequence {s}, position {bad}: token id {sequences[s][bad]} is outside the model's vocabulary of {vocab} (config.json vocab_size)");
        }
        return sequences;
    }

    // The sequences StartAsync read for this activation's run (not state: a restarted grain reads them again).
    private (IReadOnlyList<long[]>? Eval, IReadOnlyList<long[]>? Train, IReadOnlyList<long[]>? Calibration)? _tokenIds;

    /// <summary>The evaluation, fine-tuning and calibration sequences (token ids, or sentences for an encoder), checked before the run starts.</summary>
    private static (IReadOnlyList<long[]>? Eval, IReadOnlyList<long[]>? Train, IReadOnlyList<long[]>? Calibration) LoadTokenIds(RunSpec spec, CheckpointManifest manifest)
    {
        // One tokenizer and one config read for all three files, and only when a decoder needs them.
        var tokenizer = new Lazy<Shears.Pruning.Models.CheckpointTokenizer>(() => Shears.Pruning.Models.CheckpointTokenizer.Load(manifest.Root));
        var vocab = new Lazy<int>(() => Shears.Pruning.Models.LlamaConfig.Load(manifest.Root).VocabSize);
        IReadOnlyList<long[]>? Read(string? path, string option)
        {
            if (path is null) return null;
            if (!File.Exists(path)) throw new RunRejectedException($"{option} '{path}' does not exist");
            try
            {
                return manifest.Format == CheckpointFormat.Onnx
                    ? EncoderSentences(path, option, manifest)
                    : DecoderTokenIds(path, spec, () => tokenizer.Value, vocab.Value);
            }
            catch (Exception e) when (e is ArgumentException or FormatException or NotSupportedException or System.Text.Json.JsonException or IOException
                                          or InvalidDataException or Shears.Pruning.Models.LlamaConfigException)
            {
                throw new RunRejectedException($"{option}: {e.Message}");
            }
        }
        return (Read(spec.EvalData, "--eval"), Read(spec.FinetuneData, "--finetune-data"), Read(spec.Calibration, "--calibration"));
    }

    /// <summary>
    /// Sentences for an encoder: one per line of a text file (a .tsv file: its last column), tokenized
    /// with the model's own WordPiece vocabulary (vocab.txt beside the model).
    /// </summary>
    private static IReadOnlyList<long[]> EncoderSentences(string path, string option, CheckpointManifest manifest, int column = -1)
    {
        string vocabulary = Path.Combine(manifest.Root, "vocab.txt");
        if (!File.Exists(vocabulary))
            throw new RunRejectedException($"{option}: the encoder's vocabulary {vocabulary} is missing (it tokenizes the sentences)");
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(vocabulary, maxLength: 128);
        var sentences = File.ReadLines(path)
            .Select(line => path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? line.Split('\t')[^(-column)] : line)
            .Select(line => line.Trim()).Where(line => line.Length > 0)
            .Select(line => tokenizer.Tokenize(line).Select(id => (long)id).ToArray()).ToArray();
        if (sentences.Length < 2) throw new RunRejectedException($"{option} '{path}' holds fewer than 2 sentences");
        return sentences;
    }

    /// <summary>
    /// Paraphrase retrieval queries: a .tsv evaluation file whose rows hold two translations of the same
    /// text (… \t query \t match) gives its next-to-last column; null otherwise.
    /// </summary>
    private static IReadOnlyList<long[]>? EncoderQueries(RunSpec spec, CheckpointManifest manifest)
    {
        if (spec.EvalData is not { } path || !path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase)) return null;
        if (File.ReadLines(path).Where(l => l.Trim().Length > 0).Any(l => l.Split('\t').Length < 2)) return null;
        return EncoderSentences(path, "--eval", manifest, column: -2);
    }

    private static ScheduleKind ParseSchedule(string name) => name switch
    {
        RunOptions.Schedules.Linear => ScheduleKind.Linear,
        RunOptions.Schedules.Cubic => ScheduleKind.Cubic,
        _ => ScheduleKind.OneShot,
    };

    Task<RunStatus> IRunGrain.GetStatusAsync() => Task.FromResult(Status);

    async Task<RunStatus> IRunGrain.CancelAsync()
    {
        if (Status.IsFinished) return Status;
        _cancel?.Cancel();
        if (_job is not null)
        {
            try { await _job; } catch { /* the job records its own outcome */ }
        }
        return Status;
    }

    Task<string?> IRunGrain.GetReportJsonAsync() => Task.FromResult(state.State.ReportJson);

    private IShardGrain Shard(int index) => GrainFactory.GetGrain<IShardGrain>($"{RunId}/{index}");

    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task SetStatus(Func<RunStatus, RunStatus> change)
    {
        state.State.Status = change(Status);
        await state.WriteStateAsync();
        Signal();
    }

    private void Signal() => Interlocked.Exchange(ref _changed, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    async IAsyncEnumerable<RunStatus> IRunGrain.WatchAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        while (true)
        {
            var changed = _changed.Task;
            var status = Status;
            yield return status;
            if (status.IsFinished || cancellationToken.IsCancellationRequested) yield break;
            // A heartbeat every few seconds keeps the stream alive while a long phase runs (`shears run` takes a silence
            // of three as a lost coordinator and subscribes again).
            await Task.WhenAny(changed, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken));
        }
    }

    private const int MaxRecoveries = 20;

    private static bool IsTransient(Exception e)
    {
        while (e is AggregateException { InnerException: { } inner }) e = inner;
        return e is ShardNotLoadedException or TimeoutException or OrleansException;
    }

    private async Task RunJobAsync(RunSpec spec, CheckpointManifest manifest, double[] targets, CancellationToken token)
    {
        var plan = state.State.Plan!;
        string? temp = null;
        var total = Stopwatch.StartNew();
        long[][] masked = [];
        ShardInfo[] infos = [];
        var phases = new Dictionary<string, double>();
        bool reload = true;

        // Loads every shard at the last committed round: the first time, and after a lost shard or silo.
        async Task LoadAll()
        {
            var phase = Stopwatch.StartNew();
            var assignments = plan.Shards.Select(s => new ShardAssignment
            {
                RunId = RunId, ShardIndex = s.Index, ModelPath = spec.ModelPath, Pieces = s.Pieces, CopyTensors = s.CopyTensors,
                Spec = spec, StateDirectory = state.State.StateDirectory!, RestoreRound = state.State.CommittedRound, Heads = plan.Heads,
                Stage = plan.Stages?[s.Index],
            }).ToArray();
            infos = await Task.WhenAll(assignments.Select(a => Shard(a.ShardIndex).LoadAsync(a)));
            ShearsMetrics.PhaseSeconds.Record(phase.Elapsed.TotalSeconds, ShearsMetrics.Tag("phase", "load"));
            phases["load"] = phases.GetValueOrDefault("load") + phase.Elapsed.TotalSeconds;
            masked = infos.Select(i => i.MaskedPerPiece.ToArray()).ToArray();
            state.State.Shards = plan.Shards.Select((s, i) => new ShardResult
            {
                Grain = $"{RunId}/{s.Index}", Silo = infos[i].Silo, Elements = infos[i].Elements,
                Tensors = s.Pieces.Select(p => p.Tensor).Distinct().ToArray(),
            }).ToList();
            reload = false;
        }

        // Runs a step; when a shard or silo is lost it reloads every shard at the committed round and tries again.
        async Task Resilient(string what, Func<Task> step)
        {
            for (int attempt = 0; ; attempt++)
            {
                token.ThrowIfCancellationRequested();
                try
                {
                    if (reload) await LoadAll();
                    await step();
                    return;
                }
                catch (Exception e) when (IsTransient(e) && attempt < MaxRecoveries && !token.IsCancellationRequested)
                {
                    reload = true;
                    logger.LogWarning("Run {Run}: {What} interrupted ({Error}); reloading shards at round {Round}", RunId, what, Describe(e), state.State.CommittedRound);
                    await SetStatus(s => s with { Recoveries = s.Recoveries + 1 });
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5000, 250 * (attempt + 1))), token);
                }
            }
        }

        try
        {
            DelayDeactivation(TimeSpan.FromHours(24));
            await SetStatus(s => s with { Coordinator = silo.SiloAddress.ToString() });
            await Resilient("loading", () => Task.CompletedTask);

            long[][]? progressive = spec.Scope == RunOptions.Scopes.Progressive ? ProgressiveTargets(plan, infos, targets, spec.ProgressiveSpread) : null;
            var (evalData, trainData, calibrationData) = spec.NeedsPipeline ? _tokenIds ?? LoadTokenIds(spec, manifest) : (null, null, null);
            _tokenIds = null;
            bool encoder = plan.Stages is [{ Model: StagePlan.BertModel }, ..];
            var queries = encoder ? EncoderQueries(spec, manifest) : null;
            int hidden = plan.Hidden;
            // Calibration sequences are read and tokenized once for all rounds.
            IReadOnlyList<long[]>? calibration = spec.NeedsCalibration ? calibrationData!.Take(spec.CalibrationSamples).ToArray() : null;
            // The dense model's sentence embeddings: what fidelity compares with, and what distillation pulls toward.
            float[]? denseEval = null, denseTrain = null, denseQueries = null;
            if (encoder && (evalData is not null || trainData is not null))
            {
                if (!state.State.DenseEmbedded)
                {
                    await SetStatus(s => s with { Phase = "embedding sentences with the dense model" });
                    await Resilient("dense embeddings", async () =>
                    {
                        if (evalData is not null) WriteDense("eval", Flatten(await EmbedAsync(evalData, hidden, token)));
                        if (trainData is not null) WriteDense("train", Flatten(await EmbedAsync(trainData, hidden, token)));
                        if (queries is not null) WriteDense("queries", Flatten(await EmbedAsync(queries, hidden, token)));
                    });
                    state.State.DenseEmbedded = true;
                    await state.WriteStateAsync();
                }
                denseEval = evalData is not null ? ReadDense("eval") : null;
                denseTrain = trainData is not null ? ReadDense("train") : null;
                denseQueries = queries is not null ? ReadDense("queries") : null;
            }
            if (encoder && evalData is not null && Status.Baseline is null)
            {
                var dense = Unflatten(denseEval!, hidden);
                var denseQueryRows = denseQueries is { } q ? Unflatten(q, hidden) : null;
                await SetStatus(s => s with { Baseline = EncoderMetric(dense, dense, evalData, denseQueryRows) });
                ShearsMetrics.Eval(RunId, 1.0);
            }
            else if (evalData is not null && Status.Baseline is null)
            {
                await SetStatus(s => s with { Phase = "evaluating the dense model" });
                EvalMetric? baseline = null;
                await Resilient("baseline evaluation", async () => baseline = await EvaluateAsync(plan, evalData, hidden, token));
                await SetStatus(s => s with { Baseline = baseline });
                ShearsMetrics.Eval(RunId, baseline!.Value);
            }
            for (int round = state.State.CommittedRound + 1; round <= targets.Length; round++)
            {
                token.ThrowIfCancellationRequested();
                var roundClock = Stopwatch.StartNew();
                double target = targets[round - 1];
                await SetStatus(s => s with { Round = round, Phase = $"round {round}/{targets.Length}" });
                ShearsMetrics.RoundStarted(RunId, round, target);
                RoundResult? result = null;
                await Resilient($"round {round}", async () =>
                {
                    var (threshold, bytes) = await RunRoundAsync(plan, spec, round, target, masked, progressive?[round - 1], calibration, token);
                    double? loss = null;
                    EvalMetric? eval = null;
                    if (trainData is not null)
                    {
                        await SetStatus(s => s with { Phase = $"round {round}/{targets.Length}: {(encoder ? "distilling" : "fine-tuning")}" });
                        loss = await FineTuneAsync(plan, spec, trainData, round, hidden, token, encoder ? denseTrain : null);
                    }
                    if (evalData is not null)
                    {
                        await SetStatus(s => s with { Phase = $"round {round}/{targets.Length}: evaluating" });
                        eval = encoder
                            ? EncoderMetric(Unflatten(denseEval!, hidden), await EmbedAsync(evalData, hidden, token), evalData,
                                queries is null ? null : await EmbedAsync(queries, hidden, token))
                            : await EvaluateAsync(plan, evalData, hidden, token);
                    }
                    long maskedTotal = masked.Sum(m => m.Sum());
                    result = new RoundResult
                    {
                        Round = round, TargetSparsity = target, MaskedWeights = maskedTotal,
                        AchievedSparsity = plan.PrunableWeights == 0 ? 0 : (double)maskedTotal / plan.PrunableWeights,
                        Threshold = threshold is uint t ? ScoreKeys.ToScore(t) : null, Seconds = roundClock.Elapsed.TotalSeconds, SelectionBytes = bytes,
                        Eval = eval, FinetuneLoss = loss,
                    };
                    await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).CommitRoundAsync(result)));
                });
                state.State.CommittedRound = round;
                await SetStatus(s => s with { Rounds = s.Rounds.Append(result!).ToArray() });
                ShearsMetrics.RoundFinished(RunId, round, target, result!.AchievedSparsity, result.Threshold, result.Seconds);
                if (result.Eval is { } measured) ShearsMetrics.Eval(RunId, measured.Value);
                ShearsMetrics.SelectionBytes.Add(result.SelectionBytes, ShearsMetrics.Tag("run", RunId));
                logger.LogInformation("Run {Run} round {Round}: target {Target:P2}, masked {Masked}", RunId, round, target, result.MaskedWeights);
            }

            // Export: a temporary folder beside --out, renamed into place when complete.
            token.ThrowIfCancellationRequested();
            await SetStatus(s => s with { Phase = "writing" });
            var phase = Stopwatch.StartNew();
            string parent = Path.GetDirectoryName(spec.OutputPath)!;
            Directory.CreateDirectory(parent);
            temp = Path.Combine(parent, $".{Path.GetFileName(spec.OutputPath)}.shears-tmp-{RunId}");
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            Directory.CreateDirectory(temp);
            CheckpointOutput.CreateLayout(manifest, temp);
            string target_ = temp;
            ShardWriteResult[] written = [];
            await Resilient("writing", async () => written = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).WriteAsync(target_))));
            token.ThrowIfCancellationRequested();
            ShearsMetrics.PhaseSeconds.Record(phase.Elapsed.TotalSeconds, ShearsMetrics.Tag("phase", "export"));
            phases["export"] = phase.Elapsed.TotalSeconds;
            phases["rounds"] = Status.Rounds.Sum(r => r.Seconds);

            var finished = Status with { State = RunState.Completed, Phase = "completed", FinishedAt = DateTimeOffset.UtcNow };
            string report = RunReport.Build(finished, manifest, plan, masked, state.State.Shards, written, total.Elapsed.TotalSeconds, phases);
            await File.WriteAllTextAsync(Path.Combine(temp, RunReport.FileName), report, CancellationToken.None);
            if (Directory.Exists(spec.OutputPath))
            {
                if (Directory.EnumerateFileSystemEntries(spec.OutputPath).Any() && !spec.Force)
                    throw new RunRejectedException($"--out '{spec.OutputPath}' was filled by something else during the run");
                Directory.Delete(spec.OutputPath, recursive: true);
            }
            Directory.Move(temp, spec.OutputPath);
            temp = null;
            state.State.ReportJson = report;
            state.State.Status = finished;
            await state.WriteStateAsync();
            Signal();
            ShearsMetrics.RunsFinished.Add(1, ShearsMetrics.Tag("status", "completed"));
        }
        catch (Exception e) when (e is OperationCanceledException || token.IsCancellationRequested)
        {
            await Finish(RunState.Cancelled, "cancelled by the user");
        }
        catch (Exception e)
        {
            logger.LogError(e, "Run {Run} failed", RunId);
            await Finish(RunState.Failed, Describe(e));
        }
        finally
        {
            if (temp is not null && Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            if (Status.IsFinished)
            {
                if (state.State.StateDirectory is { } dir && Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                try { await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).ReleaseAsync())); }
                catch (Exception e) when (IsTransient(e)) { /* a shard on a lost silo has nothing to release */ }
                ShearsMetrics.ClearRunState(RunId);
                ShearsMetrics.RunState(RunId, Status.State.ToString());
            }
        }
    }

    private static string Describe(Exception e)
    {
        while (e is AggregateException { InnerException: { } inner }) e = inner;
        // libtorch appends its native stack to the message: keep the first line.
        return e is System.Runtime.InteropServices.ExternalException ? e.Message.Split('\n')[0] : e.Message;
    }

    private async Task Finish(RunState final, string message)
    {
        state.State.Status = Status with { State = final, Phase = final.ToString().ToLowerInvariant(), Error = message, FinishedAt = DateTimeOffset.UtcNow };
        await state.WriteStateAsync();
        Signal();
        ShearsMetrics.RunsFinished.Add(1, ShearsMetrics.Tag("status", final.ToString().ToLowerInvariant()));
    }

    /// <summary>Sequences per pipeline message: hidden states of a batch stay within the 16 MB message limit.</summary>
    private static int BatchFitting(IReadOnlyList<long[]> data, int hidden, int wanted)
    {
        long longest = data.Max(s => (long)s.Length);
        long perSequence = longest * hidden * sizeof(float);
        return (int)Math.Clamp(Orleans.Hosting.ShearsHostingExtensions.MaxMessageBytes / 2 / Math.Max(1, perSequence), 1, wanted);
    }

    /// <summary>Perplexity through the pipeline: batches enter the embedding shard and leave the head as summed NLL.</summary>
    private async Task<EvalMetric> EvaluateAsync(RunPlan plan, IReadOnlyList<long[]> data, int hidden, CancellationToken token)
    {
        int batch = BatchFitting(data, hidden, 32);
        double nll = 0;
        long tokens = 0;
        for (int start = 0; start < data.Count; start += batch)
        {
            token.ThrowIfCancellationRequested();
            var ids = data.Skip(start).Take(batch).ToArray();
            var result = await Shard(0).EvaluateAsync(new ActivationBatch { TokenIds = ids });
            nll += result.NllSum;
            tokens += result.Tokens;
        }
        return new EvalMetric { Metric = "perplexity", Value = Math.Exp(nll / tokens), Tokens = tokens };
    }

    /// <summary>Encoders: sentence embeddings through the pipeline (the last layer pools and normalizes).</summary>
    private async Task<float[][]> EmbedAsync(IReadOnlyList<long[]> sentences, int hidden, CancellationToken token)
    {
        int batch = BatchFitting(sentences, hidden, 64);
        var result = new List<float[]>(sentences.Count);
        for (int start = 0; start < sentences.Count; start += batch)
        {
            token.ThrowIfCancellationRequested();
            var ids = sentences.Skip(start).Take(batch).ToArray();
            var output = await Shard(0).EvaluateAsync(new ActivationBatch { TokenIds = ids });
            result.AddRange(Unflatten(output.Embeddings, hidden));
        }
        return result.ToArray();
    }

    private static float[] Flatten(float[][] rows) => rows.SelectMany(r => r).ToArray();

    private string DensePath(string name) => Path.Combine(state.State.StateDirectory!, $"dense-{name}.f32");

    /// <summary>Writes embeddings where every silo reaches them (a coordinator elsewhere reads them back), atomically.</summary>
    private void WriteDense(string name, float[] values)
    {
        string path = DensePath(name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path + ".tmp", System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        File.Move(path + ".tmp", path, overwrite: true);
    }

    private float[] ReadDense(string name) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(DensePath(name))).ToArray();

    private static float[][] Unflatten(float[] flat, int width) => flat.Chunk(width).ToArray();

    // The dense evaluation embeddings' neighbours: the same for every round of a run (one run per grain).
    private int[][]? _denseNeighbours;

    /// <summary>
    /// Fidelity (mean and 5th percentile cosine to the dense embeddings) and neighbour agreement at 10 (the dense
    /// model's neighbours found once per activation). With query embeddings (sentence pairs), also paraphrase retrieval:
    /// each query's match is the corpus sentence of the same row; top-1 and MRR with queries and corpus from the pruned
    /// model, and with the corpus embedded by the dense model (an index built before pruning).
    /// </summary>
    private EvalMetric EncoderMetric(float[][] dense, float[][] pruned, IReadOnlyList<long[]> sentences, float[][]? prunedQueries)
    {
        var fidelity = Shears.Pruning.Evaluation.EmbeddingQuality.Fidelity(dense, pruned);
        int k = Math.Min(10, dense.Length - 1);
        if (_denseNeighbours is not { } known || known.Length != dense.Length || known.Any(n => n.Length != k))
            _denseNeighbours = known = Shears.Pruning.Evaluation.EmbeddingQuality.NearestNeighbours(dense, k);
        double agreement = Shears.Pruning.Evaluation.EmbeddingQuality.NeighbourAgreement(known, pruned, k);
        var measures = new Dictionary<string, double>
        {
            ["fidelityP5"] = fidelity.Percentile5, ["neighbourAgreement10"] = agreement, ["sentences"] = dense.Length,
        };
        if (prunedQueries is not null && prunedQueries.Length == pruned.Length)
        {
            var retrieval = Shears.Pruning.Evaluation.ParaphraseRetrieval.Measure(prunedQueries, pruned, dense);
            measures["retrievalTop1"] = retrieval.SameModel.Top1;
            measures["retrievalMrr"] = retrieval.SameModel.Mrr;
            measures["retrievalDenseCorpusTop1"] = retrieval.DenseCorpus.Top1;
            measures["retrievalDenseCorpusMrr"] = retrieval.DenseCorpus.Mrr;
        }
        return new EvalMetric { Metric = "fidelity", Value = fidelity.Mean, Tokens = sentences.Sum(s => (long)s.Length), Measures = measures };
    }

    /// <summary>
    /// Recovery fine-tuning: each step sends one batch through the pipeline and the gradients back; each
    /// shard steps its own optimizer and re-applies its masks. Batches follow the data in order, round after round.
    /// Encoders distill toward the dense model's sentence embeddings (<paramref name="targets"/>).
    /// </summary>
    private async Task<double> FineTuneAsync(RunPlan plan, RunSpec spec, IReadOnlyList<long[]> data, int round, int hidden, CancellationToken token, float[]? targets = null)
    {
        int batch = BatchFitting(data, hidden, spec.Batch);
        double lossSum = 0;
        for (int step = 0; step < spec.FinetuneSteps; step++)
        {
            token.ThrowIfCancellationRequested();
            long first = ((long)(round - 1) * spec.FinetuneSteps + step) * batch;
            var rows = Enumerable.Range(0, batch).Select(i => (int)((first + i) % data.Count)).ToArray();
            var ids = rows.Select(r => data[r]).ToArray();
            float[] goal = targets is null ? [] : rows.SelectMany(r => targets.AsSpan(r * hidden, hidden).ToArray()).ToArray();
            var result = await Shard(0).TrainStepAsync(new ActivationBatch { TokenIds = ids, Targets = goal }, spec.LearningRate);
            lossSum += result.Loss;
        }
        await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).EndTrainingAsync()));
        return lossSum / spec.FinetuneSteps;
    }

    /// <summary>Per round, per selection group (tensor): the cumulative masked count progressive allocation asks for.</summary>
    private static long[][] ProgressiveTargets(RunPlan plan, ShardInfo[] infos, double[] targets, double spread)
    {
        var absSum = new double[plan.GroupElements.Length];
        for (int s = 0; s < plan.Shards.Count; s++)
            for (int p = 0; p < plan.Shards[s].Pieces.Count; p++)
                absSum[plan.Shards[s].Pieces[p].Group] += infos[s].AbsSumPerPiece[p];
        var importance = absSum.Select((sum, g) => sum / plan.GroupElements[g]).ToArray();
        return targets.Select(t => ProgressiveAllocation.Allocate(plan.GroupElements, importance, t, spread).Counts).ToArray();
    }

    /// <summary>One round: local decisions where a group lies on one piece, distributed exact selection elsewhere.</summary>
    private async Task<(uint? Threshold, long Bytes)> RunRoundAsync(
        RunPlan plan, RunSpec spec, int round, double target, long[][] masked, long[]? groupTargets, IReadOnlyList<long[]>? calibration, CancellationToken token)
    {
        long bytes = 0;
        if (spec.NeedsCalibration)
        {
            // Calibration flows layer by layer: each layer is pruned from the inputs that the
            // already-pruned layers before it compute, then hands its outputs on.
            int batch = BatchFitting(calibration!, plan.Hidden, 16);
            for (int start = 0; start < calibration!.Count; start += batch)
                await Shard(0).CollectCalibrationAsync(new ActivationBatch { TokenIds = calibration.Skip(start).Take(batch).ToArray() });
            foreach (var stage in plan.Stages!.Select((s, i) => (s, i)).Where(x => x.s.Kind == StagePlan.LayerKind))
            {
                token.ThrowIfCancellationRequested();
                masked[stage.i] = (await Shard(stage.i).PruneCalibratedAsync(round, target)).MaskedPerPiece;
            }
            return (null, 0);
        }
        if (spec.Pattern == RunOptions.Patterns.Heads && spec.Scope == RunOptions.Scopes.Global)
        {
            // Every head of every layer ranked together: scores from the shards, one decision, each shard masks its own.
            var scores = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).HeadScoresAsync()));
            var tensorRank = plan.Prunable.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
            var layers = scores.SelectMany(r => r.Layers.Select((name, i) => (Name: name, Scores: r.Scores[i], Pruned: r.Pruned[i])))
                .OrderBy(l => tensorRank[l.Name]).ToArray();
            var chosen = Shears.Pruning.Heads.HeadPruning.SelectHeadsGlobal(layers.Select(l => l.Scores).ToArray(), target,
                layers.SelectMany((l, i) => l.Pruned.Select(h => (i, h))).ToArray());
            var decision = new HeadDecision
            {
                Round = round,
                Heads = chosen.GroupBy(c => c.Layer).ToDictionary(g => layers[g.Key].Name, g => g.Select(c => c.Head).ToArray(), StringComparer.Ordinal),
            };
            var results = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).PruneHeadsAsync(decision)));
            for (int s = 0; s < results.Length; s++) masked[s] = results[s].MaskedPerPiece;
            return (null, scores.Sum(r => (long)r.Scores.Sum(x => x.Length) * sizeof(double)));
        }
        if (spec.Pattern != RunOptions.Patterns.Unstructured)
        {
            // Rows, columns and heads rank units inside a tensor or layer, which lie whole on one shard.
            var results = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).ApplyLocalAsync(new LocalRoundRequest
            {
                Round = round, Sparsity = target, TargetMasked = new long[s.Pieces.Count],
            })));
            for (int s = 0; s < results.Length; s++) masked[s] = results[s].MaskedPerPiece;
            return (null, 0);
        }

        var pieces = plan.Shards.SelectMany(s => s.Pieces.Select((p, i) => (Shard: s.Index, Index: i, Piece: p))).ToArray();
        var tensorOrder = plan.Prunable.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
        var local = plan.Shards.Select(s => Enumerable.Repeat(-1L, s.Pieces.Count).ToArray()).ToArray();
        var thresholds = plan.Shards.Select(s => new uint?[s.Pieces.Count]).ToArray();
        var ties = plan.Shards.Select(s => new long[s.Pieces.Count]).ToArray();
        uint? globalThreshold = null;

        for (int group = 0; group < plan.GroupElements.Length; group++)
        {
            token.ThrowIfCancellationRequested();
            var members = pieces.Where(p => p.Piece.Group == group)
                .OrderBy(p => tensorOrder[p.Piece.Tensor]).ThenBy(p => p.Piece.RowStart).ToArray();
            long goal = groupTargets?[group] ?? Counts.Target(target, plan.GroupElements[group]);
            long already = members.Sum(m => masked[m.Shard][m.Index]);
            long need = goal - already;
            if (need <= 0) continue;
            if (members.Length == 1)
            {
                local[members[0].Shard][members[0].Index] = goal;
                continue;
            }
            var shards = members.Select(m => m.Shard).Distinct().ToArray();
            var search = new GlobalThresholdSearch(need);
            while (!search.IsComplete)
            {
                var request = new HistogramRequest { Group = group, Level = search.Level, Prefix = search.Prefix };
                var histograms = await Task.WhenAll(shards.Select(s => Shard(s).HistogramAsync(request)));
                bytes += histograms.Sum(h => (long)h.Counts.Length * sizeof(long));
                // With bf16 scores everywhere the top digit is already exact: one round of messages, not two.
                search.Submit(RadixSelect.MergeHistograms(histograms.Select(h => h.Counts)), lowBitsZero: histograms.All(h => h.LowBitsZero));
            }
            uint threshold = search.ThresholdKey;
            var counts = await Task.WhenAll(shards.Select(s => Shard(s).CountAsync(group, threshold)));
            bytes += counts.Sum(c => (long)(c.Less.Length + c.Equal.Length) * sizeof(long));
            var countByShard = shards.Select((s, i) => (s, counts[i])).ToDictionary(x => x.s, x => x.Item2);
            var assigned = RadixSelect.AssignTies(members.Select(m => countByShard[m.Shard].Equal[m.Index]).ToArray(), search.TiesNeeded);
            for (int m = 0; m < members.Length; m++)
            {
                thresholds[members[m].Shard][members[m].Index] = threshold;
                ties[members[m].Shard][members[m].Index] = assigned[m];
            }
            if (spec.Scope == RunOptions.Scopes.Global) globalThreshold = threshold;
        }

        var calls = new List<Task<(int Shard, ShardRoundResult Result)>>();
        foreach (var s in plan.Shards)
        {
            int index = s.Index;
            if (local[index].Any(t => t >= 0))
                calls.Add(Tagged(index, Shard(index).ApplyLocalAsync(new LocalRoundRequest { Round = round, Sparsity = target, TargetMasked = local[index] })));
        }
        foreach (var r in await Task.WhenAll(calls)) masked[r.Shard] = r.Result.MaskedPerPiece;
        calls.Clear();
        foreach (var s in plan.Shards)
        {
            int index = s.Index;
            if (thresholds[index].Any(t => t is not null))
                calls.Add(Tagged(index, Shard(index).ApplyAsync(new MaskDecision { Round = round, Thresholds = thresholds[index], Ties = ties[index] })));
        }
        foreach (var r in await Task.WhenAll(calls)) masked[r.Shard] = r.Result.MaskedPerPiece;
        return (globalThreshold, bytes);

        static async Task<(int, ShardRoundResult)> Tagged(int shard, Task<ShardRoundResult> call) => (shard, await call);
    }
}
