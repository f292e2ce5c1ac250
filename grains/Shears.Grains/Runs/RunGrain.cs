using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Grains.Shards;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Schedules;

namespace Shears.Grains.Runs;

/// <summary>
/// The coordinator of one run. It reads only the checkpoint's manifest, plans the shards, and drives
/// the rounds from per-shard statistics; weights never pass through it. Calls return at once and the
/// run proceeds in the background of this activation.
/// </summary>
[Reentrant]
[CoordinatorPlacement]
public sealed partial class RunGrain(
    [PersistentState("run", ShearsStorage.Name)] IPersistentState<RunGrainState> state,
    ManifestCache manifests,
    IOptions<ShearsOptions> options,
    ILocalSiloDetails silo,
    ILogger<RunGrain> logger,
    Diagnostics.GrainCallTimes callTimes,
    Placement.ShardBudgets budgets) : Grain, IRunGrain
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
        RunSpec spec;
        CheckpointManifest manifest;
        string? stateDirectory = null, dequantized = null;
        RunPlan plan;
        double[] targets;
        try
        {
            var errors = RunOptions.Validate(given);
            if (errors.Count > 0) throw new RunRejectedException(string.Join("; ", errors));
            spec = given with { ModelPath = Path.GetFullPath(given.ModelPath), OutputPath = Path.GetFullPath(given.OutputPath) };
            CheckPaths(spec);

            try { manifest = manifests.Get(spec.ModelPath); }
            catch (CheckpointFormatException e) { throw new RunRejectedException(e.Message); }
            stateDirectory = Path.Combine(Path.GetDirectoryName(spec.OutputPath)!, $".shears-state-{RunId}");
            dequantized = ReadQuantizedAsDense(ref spec, ref manifest, stateDirectory);
            plan = FitBudgets(RunPlanner.Plan(manifest, spec), manifest, spec);
            try { targets = Schedule.Targets(ParseSchedule(spec.Schedule), spec.Sparsity, spec.Rounds); }
            catch (ArgumentException e) { throw new RunRejectedException(e.Message); }

            // Read, tokenized and checked before the run starts; the job takes them from here unless the grain restarted.
            _tokenIds = LoadTokenIds(spec, manifest);
        }
        catch (Exception e)
        {
            if (e is RunRejectedException) ShearsMetrics.RunsRefused.Add(1);
            // A refused run leaves no state folder (the dense layout of a quantized model is made in it).
            if (dequantized is not null && Directory.Exists(stateDirectory)) Directory.Delete(stateDirectory, recursive: true);
            throw;
        }
        state.State.Plan = plan;
        state.State.StateDirectory = stateDirectory;
        state.State.DequantizedModel = dequantized;
        state.State.Status = new RunStatus
        {
            RunId = RunId, State = RunState.Running, Phase = "loading", Spec = given,
            TotalRounds = targets.Length, PrunableWeights = plan.PrunableWeights, Shards = plan.Shards.Count,
            StartedAt = DateTimeOffset.UtcNow,
        };
        // Before the state is written: a run is never recorded without the reminder that resumes it after a lost silo.
        await KeepRunningAsync();
        await SaveStateAsync();
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
            var spec = given with { ModelPath = state.State.DequantizedModel ?? Path.GetFullPath(given.ModelPath), OutputPath = Path.GetFullPath(given.OutputPath) };
            logger.LogInformation("Run {Run} resumes after round {Round}", RunId, state.State.CommittedRound);
            ShearsMetrics.RoundsResumed(RunId, Status.Baseline, Status.Rounds);
            var manifest = manifests.Get(spec.ModelPath);
            var targets = Schedule.Targets(ParseSchedule(spec.Schedule), spec.Sparsity, spec.Rounds);
            StartJob(spec, manifest, targets);
            return EnsureKeepRunningAsync();
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
        // Every file the run reads or writes, by its real location (links followed, .. after them).
        var roots = new DataRoots(options.Value.DataRoots);
        foreach (var (option, path) in new[] { ("--model", spec.ModelPath), ("--out", spec.OutputPath), ("--eval", spec.EvalData),
                     ("--finetune-data", spec.FinetuneData), ("--calibration", spec.Calibration) })
        {
            if (path is null) continue;
            string? outside;
            try { outside = roots.Outside(path); }
            catch (IOException e) { throw new RunRejectedException($"{option} {e.Message}"); }
            if (outside is not null) throw new RunRejectedException($"{option} {outside} lies outside the silo's data roots ({string.Join(", ", roots.Roots)})");
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

    Task<IReadOnlyList<ShardResult>> IRunGrain.GetShardsAsync() => Task.FromResult<IReadOnlyList<ShardResult>>(state.State.Shards?.ToArray() ?? []);

    private IShardGrain Shard(int index) => GrainFactory.GetGrain<IShardGrain>($"{RunId}/{index}");

    private static bool IsTransient(Exception e)
    {
        while (e is AggregateException { InnerException: { } inner }) e = inner;
        return e is ShardNotLoadedException or TimeoutException or OrleansException;
    }
}
