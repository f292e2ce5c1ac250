using System.Diagnostics;
using Shears.Contracts;
using Shears.Engine.Shards;

namespace Shears.Grains.Shards;

// Statistics for the coordinator's selection, and the decisions it sends back: the engine's shard decides, on the
// silo's compute executor; the grain translates the messages and records metrics.
public sealed partial class ShardGrain
{
    Task<ShardReply<HistogramResult[]>> IShardGrain.HistogramsAsync(HistogramRequest[] requests)
    {
        var selection = Selection;
        return Jobs.Run(compute.RunAsync(() => ReleasingMaps(selection.Histograms(requests.Select(EngineWire.Query).ToArray()).Select(EngineWire.Result).ToArray())));
    }

    Task<ShardReply<ThresholdCounts[]>> IShardGrain.CountsAsync(CountRequest[] requests)
    {
        var selection = Selection;
        return Jobs.Run(compute.RunAsync(() => ReleasingMaps(selection.Counts(requests.Select(EngineWire.Query).ToArray()).Select(EngineWire.Result).ToArray())));
    }

    Task<ShardReply<ShardRoundResult>> IShardGrain.ApplyAsync(MaskDecision decision) => Jobs.Run(Decide(s => _ = s.Apply(EngineWire.Decision(decision))));

    Task<ShardReply<ShardRoundResult>> IShardGrain.ApplyLocalAsync(LocalRoundRequest request) => Jobs.Run(Decide(s => _ = s.ApplyLocal(EngineWire.Decision(request))));

    Task<ShardReply<UnitScores>> IShardGrain.UnitScoresAsync()
    {
        // A shard that re-activated without its weights must say so, not report no heads.
        var selection = Selection;
        return Jobs.Run(compute.RunAsync(() => EngineWire.Result(selection.UnitScores())));
    }

    Task<ShardReply<ShardRoundResult>> IShardGrain.PruneUnitsAsync(UnitDecision decision) => Jobs.Run(Decide(s => _ = s.PruneUnits(EngineWire.Choice(decision))));

    Task<ShardReply<T>> IShardGrain.PollAsync<T>(long ticket, TimeSpan wait) => Jobs.Poll<T>(ticket, wait, this.GetPrimaryKeyString());

    /// <summary>
    /// After a pass over the weights: a shard that also runs a model stage (which holds its own fp32 copy) lets the mapped
    /// pages go, so that the silo never holds a stage's weights twice for long. Returns <paramref name="result"/>.
    /// </summary>
    private T ReleasingMaps<T>(T result)
    {
        if (_stage is not null) foreach (var piece in _pieces) piece.ReleaseResident();
        return result;
    }

    private ShardSelection Selection
    {
        get
        {
            _ = Assignment;
            return _selection!;
        }
    }

    /// <summary>Runs a decision that changes masks; the model stage, if any, computes with the new ones from now on.</summary>
    private async Task<ShardRoundResult> Decide(Action<ShardSelection> decide)
    {
        var selection = Selection;
        var stopwatch = Stopwatch.StartNew();
        await compute.RunAsync(() => { decide(selection); ReleasingMaps(true); });
        _stage?.Invalidate();
        return Result(stopwatch);
    }
}
