using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Grains.Compute;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Heads;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

/// <summary>
/// Holds the weights of one shard in memory (never as grain state), computes its statistics and
/// applies the coordinator's decisions. All tensor work runs on the silo's compute executor.
/// </summary>
[ShardPlacement]
public sealed partial class ShardGrain(
    ComputeExecutor compute, ComputeDevice device, ManifestCache manifests, ILocalSiloDetails silo,
    Microsoft.Extensions.Options.IOptions<ShearsOptions> options, ILogger<ShardGrain> logger, IEnumerable<IStageInterceptor> interceptors)
    : Grain, IShardGrain
{
    private ShardAssignment? _assignment;
    private ShardSelection? _selection;
    private StageRunner? _stage;

    // What the model stages and the export read: the pieces the engine's shard holds.
    private CheckpointManifest? _manifest => _selection?.Manifest;
    private LoadedPiece[] _pieces => _selection?.Pieces ?? [];

    private void ForgetStatistics() => _selection?.ForgetStatistics();

    private long CachedHistogramElements => options.Value.CachedHistogramElements;

    private ShardAssignment Assignment => _assignment ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} has not been loaded on {silo.SiloAddress}");

    private ShardJobs? _jobs;
    private ShardJobs Jobs => _jobs ??= new ShardJobs(options.Value.ShardCallWait);

    // The load under way or done, by epoch: the coordinator starts it and polls it.
    private (string Epoch, Task<ShardInfo> Job)? _loading;

    Task IShardGrain.StartLoadAsync(ShardAssignment assignment)
    {
        if (_loading is { } known && known.Epoch == assignment.Epoch) return Task.CompletedTask;
        var previous = _loading?.Job;
        _loading = (assignment.Epoch, LoadAfterAsync(previous, assignment));
        return Task.CompletedTask;
    }

    async Task<ShardInfo?> IShardGrain.LoadedAsync(string epoch, TimeSpan wait)
    {
        if (_loading is not { } loading || loading.Epoch != epoch)
            throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} on {silo.SiloAddress} has no load of epoch {epoch} (it was re-activated)");
        if (!loading.Job.IsCompleted) await Task.WhenAny(loading.Job, Task.Delay(wait));
        return loading.Job.IsCompleted ? await loading.Job : null;
    }

    private async Task<ShardInfo> LoadAfterAsync(Task? previous, ShardAssignment assignment)
    {
        // Two loads never change the pieces at once; the earlier one's outcome was its own epoch's.
        if (previous is not null) await previous.ContinueWith(_ => { }, TaskScheduler.Current);
        return await LoadAsync(assignment);
    }

    private async Task<ShardInfo> LoadAsync(ShardAssignment assignment)
    {
        var stopwatch = Stopwatch.StartNew();
        ForgetStatistics();
        ForgetQuantization();
        bool reused = _assignment is { } loaded && _pieces.Length == assignment.Pieces.Count && SameData(loaded, assignment);
        // Kept weights were read before, not now, unless they were trained and must be read again.
        bool read = !reused || _stage is { Trained: true };
        if (reused)
        {
            // Already holding these weights: only go back to the committed masks (and the checkpoint's weights, when trained).
            bool trained = _stage is { Trained: true };
            await compute.RunAsync(() => _selection!.Restore(ToLoad(assignment), trained));
            _assignment = assignment;
        }
        else
        {
            _assignment = null;
            _stage?.Dispose();
            _stage = null;
            _selection?.Dispose();
            _selection = null;
            _selection = await compute.RunAsync(() => ShardSelection.Load(ToLoad(assignment)));
            if (assignment.Stage is { } plan)
                _stage = await compute.RunAsync(() => BuildStage(assignment, plan));
            _assignment = assignment;
        }
        _stage?.Reset();
        _worker?.Reset();
        _jobs?.Clear();
        await compute.RunAsync(() => RestoreQuantized(assignment));
        long bytes = _pieces.Sum(p => (long)p.ByteLength);
        if (read) ShearsMetrics.BytesRead.Add(bytes, new KeyValuePair<string, object?>("run", assignment.RunId));
        ShearsMetrics.Shard(assignment.RunId, this.GetPrimaryKeyString(), _pieces.Sum(p => p.Mask.CountSet()));
        logger.LogInformation("Shard {Shard} loaded {Pieces} pieces ({Bytes} bytes) in {Seconds:F2}s", this.GetPrimaryKeyString(), _pieces.Length, bytes, stopwatch.Elapsed.TotalSeconds);
        return new ShardInfo
        {
            Silo = silo.SiloAddress.ToString(),
            Elements = _pieces.Sum(p => p.Piece.Elements),
            BytesRead = bytes,
            MaskedPerPiece = _pieces.Select(p => p.Mask.CountSet()).ToArray(),
            AbsSumPerPiece = _selection!.AbsSumPerPiece(),
            ComputeThreads = compute.Threads,
        };
    }

    private StageRunner BuildStage(ShardAssignment assignment, StagePlan plan)
    {
        var manifest = _manifest!;
        var own = _pieces.Select(p => p.Entry.Name).ToHashSet(StringComparer.Ordinal);
        var frozen = plan.Tensors.Where(n => !own.Contains(n)).Select(manifest.Get).ToArray();
        if (plan.Model == StagePlan.BertModel)
        {
            var encoder = manifests.Encoder(manifest.PathOf(manifest.Files[0].FileName));
            return new StageRunner(plan, null, device.Device, manifest, frozen, encoder.Config, encoder.Names,
                bypassMasked: assignment.Spec.Pattern == RunOptions.Patterns.Layers);
        }
        var config = Shears.Pruning.Models.LlamaConfig.Load(manifest.Root);
        return new StageRunner(plan, config, device.Device, manifest, frozen);
    }

    // Every assignment arrives as a copy: compared by content, or a shard that kept its weights would reload them.
    private static bool SameData(ShardAssignment a, ShardAssignment b) =>
        a.RunId == b.RunId && a.ModelPath == b.ModelPath && a.Pieces.SequenceEqual(b.Pieces) && a.Spec.SameAs(b.Spec);

    private ShardLoad ToLoad(ShardAssignment assignment) => new()
    {
        Manifest = manifests.Get(assignment.ModelPath),
        Pieces = assignment.Pieces.Select(EngineWire.Piece).ToArray(),
        Recipe = EngineWire.Recipe(assignment.Spec),
        ChangesWeights = assignment.Spec.Trains,
        Heads = EngineWire.Heads(assignment.Heads),
        RestoredMasks = assignment.RestoreRound > 0 ? assignment.Pieces.Select((_, i) => MaskPath(assignment, i, assignment.RestoreRound)).ToArray() : null,
        CachedHistogramElements = CachedHistogramElements,
    };

    /// <summary>Bytes written at a time: a multiple of 64 elements of any dtype, small enough to stay in cache.</summary>
    private const int IoChunkBytes = 4 << 20;

    private ShardRoundResult Result(Stopwatch stopwatch)
    {
        var masked = _pieces.Select(p => p.Mask.CountSet()).ToArray();
        ShearsMetrics.Shard(Assignment.RunId, this.GetPrimaryKeyString(), masked.Sum());
        return new ShardRoundResult { MaskedPerPiece = masked, Seconds = stopwatch.Elapsed.TotalSeconds };
    }

    Task IShardGrain.ReleaseAsync()
    {
        _loading = null;
        _jobs?.Clear();
        if (_assignment is { } assignment) ShearsMetrics.RunFinished(assignment.RunId, options.Value.MetricsRetention);
        DropEverything();
        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    /// <summary>A grain that deactivates without ReleaseAsync (idle, or its run's coordinator lost) still unmaps its weights.</summary>
    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        DropEverything();
        return Task.CompletedTask;
    }

    private void DropEverything()
    {
        _worker?.Reset();
        _stage?.Dispose();
        _stage = null;
        _selection?.Dispose();
        _selection = null;
    }
}
