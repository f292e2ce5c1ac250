using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Structured;
using Shears.Pruning.Scoring;

namespace Shears.Grains.Runs;

// The run itself, in the background of the activation: plan, load, rounds, export, and the shards released at the end.
public sealed partial class RunGrain
{
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
            string epoch = Guid.NewGuid().ToString("N");
            var assignments = plan.Shards.Select(s => new ShardAssignment
            {
                Epoch = epoch,
                RunId = RunId, ShardIndex = s.Index, ModelPath = spec.ModelPath, Pieces = s.Pieces, CopyTensors = s.CopyTensors,
                Spec = spec, StateDirectory = state.State.StateDirectory!, RestoreRound = state.State.CommittedRound, Heads = plan.Heads,
                Stage = plan.Stages?[s.Index], Quantized = plan.Quantized,
            }).ToArray();
            // Where each shard goes, within the silos' memory budgets (after a lost silo: within the survivors').
            if (!budgets.Place(RunId, ShardNeeds(plan, manifest, spec), i => Describe(plan, i)))
                logger.LogWarning("Run {Run}: no silo's memory budget is known yet; shards are spread evenly", RunId);
            await Task.WhenAll(assignments.Select(a => Shard(a.ShardIndex).StartLoadAsync(a)));
            infos = await Task.WhenAll(assignments.Select(async a =>
            {
                while (true)
                {
                    token.ThrowIfCancellationRequested();
                    if (await Shard(a.ShardIndex).LoadedAsync(a.Epoch, PipelineDriver.PollWait) is { } info) return info;
                }
            }));
            ShearsMetrics.PhaseSeconds.Record(phase.Elapsed.TotalSeconds, ShearsMetrics.Tag("phase", "load"));
            phases["load"] = phases.GetValueOrDefault("load") + phase.Elapsed.TotalSeconds;
            masked = infos.Select(i => i.MaskedPerPiece.ToArray()).ToArray();
            _pipeline = plan.Stages is { } stages ? new PipelineDriver(GrainFactory, RunId, epoch, stages) : null;
            _computeWorkers = Math.Max(1, infos.GroupBy(i => i.Silo).Sum(g => g.First().ComputeThreads));
            state.State.Shards = plan.Shards.Select((s, i) => new ShardResult
            {
                Grain = $"{RunId}/{s.Index}", Silo = infos[i].Silo, Elements = infos[i].Elements,
                Tensors = s.Pieces.Select(p => p.Tensor).Distinct().ToArray(),
            }).ToList();
            reload = false;
        }

        // Runs a step; when a shard or silo is lost it reloads every shard at the committed round and tries again, a
        // bounded number of times: a step that fails the same way after every recovery fails the run, naming the step.
        async Task Resilient(string what, Func<Task> step)
        {
            int limit = options.Value.MaxRecoveries;
            for (int attempt = 0; ; attempt++)
            {
                token.ThrowIfCancellationRequested();
                try
                {
                    if (reload) await LoadAll();
                    await step();
                    return;
                }
                catch (Exception e) when (IsTransient(e) && !token.IsCancellationRequested)
                {
                    if (attempt >= limit)
                        throw new RunStepFailedException($"{what} failed again after {limit} {(limit == 1 ? "recovery" : "recoveries")}: {Describe(e)}", e);
                    reload = true;
                    logger.LogWarning("Run {Run}: {What} interrupted ({Error}); reloading shards at round {Round}", RunId, what, Describe(e), state.State.CommittedRound);
                    await SetStatus(s => s with { Recoveries = s.Recoveries + 1 });
                    // 1 s, 3 s, 9 s, …: a lost silo is declared dead within seconds; until then its grains cannot move.
                    await Task.Delay(TimeSpan.FromSeconds(Math.Min(30, Math.Pow(3, attempt))), token);
                }
            }
        }

        try
        {
            DelayDeactivation(TimeSpan.FromHours(24));
            await SetStatus(s => s with { Coordinator = silo.SiloAddress.ToString() });
            await DequantizeModelAsync(phases, token);
            await Resilient("loading", () => Task.CompletedTask);

            long[][]? groupTargets = spec.Scope == RunOptions.Scopes.Progressive ? ProgressiveTargets(plan, infos, targets, spec.ProgressiveSpread) : null;
            var (evalData, trainData, calibrationData) = spec.NeedsPipeline ? _tokenIds ?? LoadTokenIds(spec, manifest) : (null, null, null);
            _tokenIds = null;
            bool encoder = plan.Stages is [{ Model: StagePlan.BertModel }, ..];
            var queries = encoder ? EncoderQueries(spec, manifest) : null;
            int hidden = plan.Hidden;
            // Calibration sequences are read and tokenized once for all rounds.
            IReadOnlyList<long[]>? calibration = spec.UsesCalibration ? calibrationData!.Take(spec.CalibrationSamples).ToArray() : null;
            if (spec.NeedsOutliers) groupTargets = await OwlTargetsAsync(plan, spec, targets, calibration!, Resilient, token);
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
                        // Only the sentences the steps will read: a large distillation file costs no more than its used part.
                        if (trainData is not null) WriteDense("train", Flatten(await EmbedAsync(trainData.Take(TrainingRowsUsed(spec, trainData, hidden, targets.Length)).ToArray(), hidden, token)));
                        if (queries is not null) WriteDense("queries", Flatten(await EmbedAsync(queries, hidden, token)));
                    });
                    state.State.DenseEmbedded = true;
                    await SaveStateAsync();
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
                ShearsMetrics.Baseline(RunId, 1.0);
            }
            else if (evalData is not null && Status.Baseline is null)
            {
                await SetStatus(s => s with { Phase = "evaluating the dense model" });
                EvalMetric? baseline = null;
                await Resilient("baseline evaluation", async () => baseline = await EvaluateAsync(plan, evalData, hidden, token));
                await SetStatus(s => s with { Baseline = baseline });
                ShearsMetrics.Baseline(RunId, baseline!.Value);
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
                    var (threshold, bytes, influence) = await RunRoundAsync(plan, spec, round, target, masked, groupTargets?[round - 1], calibration, token);
                    double? loss = null;
                    EvalMetric? eval = null;
                    if (trainData is not null)
                    {
                        await SetStatus(s => s with { Phase = $"round {round}/{targets.Length}: {(encoder ? "distilling" : "fine-tuning")}" });
                        loss = await FineTuneAsync(plan, spec, trainData, round, hidden, token, encoder ? denseTrain : null);
                    }
                    var quantized = round == targets.Length ? await QuantizeAsync(manifest, plan, spec, round, targets.Length, calibration, token) : null;
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
                        Eval = eval, FinetuneLoss = loss, Quantized = quantized, BlockInfluence = influence,
                    };
                    await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).CommitRoundAsync(result).Complete(Shard(s.Index), token)));
                });
                state.State.CommittedRound = round;
                await SetStatus(s => s with { Rounds = s.Rounds.Append(result!).ToArray() });
                ShearsMetrics.RoundFinished(RunId, result!);
                ShearsMetrics.SelectionBytes.Add(result!.SelectionBytes, ShearsMetrics.Tag("run", RunId));
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
            string target_ = temp;
            ShardWriteResult[] written = [];
            RemovalPlan? removal = null;
            await Resilient("writing", async () =>
            {
                // Generated weights have no bytes to write: the output holds the report alone.
                if (spec.SyntheticWeights is not null) return;
                removal = await PlanRemovalAsync(manifest, plan, spec, token);
                if (removal is not null)
                {
                    written = await WriteRemovedOutputAsync(manifest, plan, spec, removal, target_, token);
                    return;
                }
                // The shards write their pruned tensors (and copy the others they were given): the layout leaves those out.
                CreateOutputLayout(manifest, plan, spec, target_);
                written = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).WriteAsync(target_).Complete(Shard(s.Index), token)));
            });
            FinishOnnxOutput(manifest, plan, spec, removal, temp);
            token.ThrowIfCancellationRequested();
            ShearsMetrics.PhaseSeconds.Record(phase.Elapsed.TotalSeconds, ShearsMetrics.Tag("phase", "export"));
            phases["export"] = phase.Elapsed.TotalSeconds;
            phases["rounds"] = Status.Rounds.Sum(r => r.Seconds);

            var finished = Status with { State = RunState.Completed, Phase = "completed", FinishedAt = DateTimeOffset.UtcNow };
            string report = RunReport.Build(finished, manifest, plan, masked, state.State.Shards, written, total.Elapsed.TotalSeconds, phases, callTimes.Longest(RunId), RunReport.OutputFiles(temp),
                state.State.DequantizedModel is null ? null : Shears.Pruning.ModelFiles.ReadManifest(Path.GetFullPath(Status.Spec!.ModelPath)),
                RemovalReport(removal, manifest));
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
            await ReleaseShardsAsync(plan);
            state.State.Status = finished;
            await SaveStateAsync();
            Signal();
            ShearsMetrics.RunsFinished.Add(1, ShearsMetrics.Tag("status", "completed"));
        }
        catch (Exception e) when (e is OperationCanceledException || token.IsCancellationRequested)
        {
            await ReleaseShardsAsync(plan);
            await Finish(RunState.Cancelled, "cancelled by the user");
        }
        catch (Exception e)
        {
            logger.LogError(e, "Run {Run} failed", RunId);
            await ReleaseShardsAsync(plan);
            await Finish(RunState.Failed, Describe(e));
        }
        finally
        {
            if (temp is not null && Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            if (Status.IsFinished)
            {
                budgets.Release(RunId);
                if (state.State.StateDirectory is { } dir && Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                ShearsMetrics.ClearRunState(RunId);
                callTimes.Forget(RunId);
                ShearsMetrics.RunState(RunId, Status.State.ToString());
                ShearsMetrics.RunFinished(RunId, options.Value.MetricsRetention);
                await StopKeepingRunningAsync();
            }
        }
    }

    /// <summary>
    /// The shards drop their weights and deactivate before the run is marked finished, so a client that stops its
    /// embedded silo on seeing the end never cuts these calls short.
    /// </summary>
    private async Task ReleaseShardsAsync(RunPlan plan)
    {
        try { await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).ReleaseAsync())); }
        catch (Exception e)
        {
            // A shard on a lost silo has nothing to release; no other failure here may keep the run from finishing.
            if (!IsTransient(e)) logger.LogWarning(e, "Run {Run}: releasing the shards", RunId);
        }
    }
}
