namespace Shears.Engine.Tests;

/// <summary>Passes every call on and records which shard was asked what, in the order the calls were made.</summary>
internal sealed class RecordingShardSet(IShardSet inner) : IShardSet
{
    public List<(string Method, int Shard, int Queries)> Calls { get; } = [];

    private void Record(string method, int shard, int queries = 1)
    {
        lock (Calls) Calls.Add((method, shard, queries));
    }

    public Task<IReadOnlyList<GroupHistogram>> HistogramsAsync(int shard, IReadOnlyList<HistogramQuery> queries)
    {
        Record("histograms", shard, queries.Count);
        return inner.HistogramsAsync(shard, queries);
    }

    public Task<IReadOnlyList<PieceCounts>> CountsAsync(int shard, IReadOnlyList<CountQuery> queries)
    {
        Record("counts", shard, queries.Count);
        return inner.CountsAsync(shard, queries);
    }

    public Task<long[]> ApplyAsync(int shard, ThresholdDecision decision)
    {
        Record("apply", shard);
        return inner.ApplyAsync(shard, decision);
    }

    public Task<long[]> ApplyLocalAsync(int shard, LocalDecision decision)
    {
        Record("local", shard);
        return inner.ApplyLocalAsync(shard, decision);
    }

    public Task<UnitScoreSet> UnitScoresAsync(int shard)
    {
        Record("head scores", shard);
        return inner.UnitScoresAsync(shard);
    }

    public Task<long[]> PruneUnitsAsync(int shard, UnitChoice choice)
    {
        Record("prune heads", shard);
        return inner.PruneUnitsAsync(shard, choice);
    }

    public Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences)
    {
        Record("feed", -1, sequences.Count);
        return inner.FeedCalibrationAsync(sequences);
    }

    public Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity, long[]? targetMasked = null)
    {
        Record("prune layer", shard);
        return inner.PruneCalibratedAsync(shard, round, sparsity, targetMasked);
    }

    public Task<Shears.Pruning.Allocation.OutlierCount> OutlierCountAsync(int shard, double threshold)
    {
        Record("count outliers", shard);
        return inner.OutlierCountAsync(shard, threshold);
    }

    public Task<LayerInfluence> BlockInfluenceAsync(int shard)
    {
        Record("block influence", shard);
        return inner.BlockInfluenceAsync(shard);
    }

    public Task QuantizeCalibratedAsync(int shard)
    {
        Record("quantize layer", shard);
        return inner.QuantizeCalibratedAsync(shard);
    }
}
