namespace Shears.Engine.Shards;

/// <summary>
/// The shards of a run held in this process: each call runs on the caller's thread. Calibration runs the model's
/// layers, which the engine does not hold: a host that calibrates supplies those two steps.
/// </summary>
public sealed class InProcessShardSet(IReadOnlyList<ShardSelection> shards) : IShardSet
{
    public IReadOnlyList<ShardSelection> Shards { get; } = shards;

    public Task<IReadOnlyList<GroupHistogram>> HistogramsAsync(int shard, IReadOnlyList<HistogramQuery> queries) =>
        Task.FromResult<IReadOnlyList<GroupHistogram>>(Shards[shard].Histograms(queries));

    public Task<IReadOnlyList<PieceCounts>> CountsAsync(int shard, IReadOnlyList<CountQuery> queries) =>
        Task.FromResult<IReadOnlyList<PieceCounts>>(Shards[shard].Counts(queries));

    public Task<long[]> ApplyAsync(int shard, ThresholdDecision decision) => Task.FromResult(Shards[shard].Apply(decision));

    public Task<long[]> ApplyLocalAsync(int shard, LocalDecision decision) => Task.FromResult(Shards[shard].ApplyLocal(decision));

    public Task<UnitScoreSet> UnitScoresAsync(int shard) => Task.FromResult(Shards[shard].UnitScores());

    public Task<long[]> PruneUnitsAsync(int shard, UnitChoice choice) => Task.FromResult(Shards[shard].PruneUnits(choice));

    public Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences) =>
        throw new NotSupportedException("calibrated methods run the model's layers, which in-process shards do not hold");

    public Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity, long[]? targetMasked = null) =>
        throw new NotSupportedException("calibrated methods run the model's layers, which in-process shards do not hold");

    public Task<Shears.Pruning.Allocation.OutlierCount> OutlierCountAsync(int shard, double threshold) =>
        throw new NotSupportedException("outlier ratios come from the model's layers, which in-process shards do not hold");

    public Task<LayerInfluence> BlockInfluenceAsync(int shard) =>
        throw new NotSupportedException("block influence comes from the model's layers, which in-process shards do not hold");

    public Task QuantizeCalibratedAsync(int shard) =>
        throw new NotSupportedException("GPTQ runs the model's layers, which in-process shards do not hold");
}
