namespace Shears.Engine;

/// <summary>
/// The shards of a run as the rounds see them. Each call goes to one shard (by index in the layout) and answers
/// for its pieces in assignment order; calls to different shards may run at once. Requests of several selection
/// groups travel in one call, so a search level costs one message per shard whatever the number of groups.
/// </summary>
public interface IShardSet
{
    /// <summary>One digit histogram per query, over the unmasked scores of the shard's pieces in the query's group.</summary>
    Task<IReadOnlyList<GroupHistogram>> HistogramsAsync(int shard, IReadOnlyList<HistogramQuery> queries);

    /// <summary>Per query, per piece: unmasked scores below and equal to the threshold (zero for pieces of other groups).</summary>
    Task<IReadOnlyList<PieceCounts>> CountsAsync(int shard, IReadOnlyList<CountQuery> queries);

    /// <summary>Masks below each piece's threshold and its share of the ties; returns masked elements per piece.</summary>
    Task<long[]> ApplyAsync(int shard, ThresholdDecision decision);

    /// <summary>A round decided inside the shard (layer-local units, groups on one piece); returns masked elements per piece.</summary>
    Task<long[]> ApplyLocalAsync(int shard, LocalDecision decision);

    Task<UnitScoreSet> UnitScoresAsync(int shard);

    /// <summary>Masks the chosen heads of the named layers; returns masked elements per piece.</summary>
    Task<long[]> PruneUnitsAsync(int shard, UnitChoice choice);

    /// <summary>Hands the calibration sequences to the model's first layer, which keeps its inputs.</summary>
    Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences);

    /// <summary>
    /// Prunes one layer from its kept calibration inputs and passes them on to the next; returns masked elements per
    /// piece. <paramref name="targetMasked"/>: per piece, the cumulative masked count to reach (per-layer allocation);
    /// null: every tensor at <paramref name="sparsity"/>.
    /// </summary>
    Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity, long[]? targetMasked = null);

    /// <summary>
    /// Counts one layer's outliers (OWL) from its kept calibration inputs with its weights as they are, and passes the
    /// inputs on, through the unchanged layer, to the next.
    /// </summary>
    Task<Shears.Pruning.Allocation.OutlierCount> OutlierCountAsync(int shard, double threshold);

    /// <summary>
    /// ShortGPT's block influence of one layer: its kept calibration inputs run through it as it is, 1 − cos(input,
    /// output) summed over the real tokens; the outputs are passed on to the next layer.
    /// </summary>
    Task<LayerInfluence> BlockInfluenceAsync(int shard);

    /// <summary>Quantizes one layer with GPTQ from its kept calibration inputs (masks fixed) and passes them on to the next.</summary>
    Task QuantizeCalibratedAsync(int shard);
}

/// <param name="Level">0: the top 16 bits of the score keys; 1: the low 16 bits of keys whose top bits are <paramref name="Prefix"/>.</param>
public sealed record HistogramQuery(int Group, int Level, uint Prefix);

/// <param name="Counts">65,536 buckets.</param>
/// <param name="LowBitsZero">Every counted key has zero low bits (bf16): the top digit alone decides exactly.</param>
public sealed record GroupHistogram(long[] Counts, bool LowBitsZero);

public sealed record CountQuery(int Group, uint Threshold);

public sealed record PieceCounts(long[] Less, long[] Equal);

/// <param name="Thresholds">Per piece: keys below it are masked; null where the piece masks nothing by threshold.</param>
/// <param name="Ties">Per piece: how many keys equal to the threshold to mask, lowest positions first.</param>
public sealed record ThresholdDecision(int Round, uint?[] Thresholds, long[] Ties);

/// <param name="Sparsity">The round's cumulative target (rows, columns and heads count their units by it).</param>
/// <param name="TargetMasked">Per piece, the cumulative masked elements to reach; -1 where the piece is not decided here.</param>
public sealed record LocalDecision(int Round, double Sparsity, long[] TargetMasked);

/// <summary>Per layer of structured units a shard holds (named by its first tensor: q_proj, gate_proj): the units' scores and those already pruned.</summary>
public sealed record UnitScoreSet(IReadOnlyList<string> Layers, IReadOnlyList<double[]> Scores, IReadOnlyList<int[]> Pruned);

/// <summary>The units (heads or neurons) to mask, per layer (named by its first tensor: q_proj, gate_proj), decided by the coordinator.</summary>
public sealed record UnitChoice(int Round, IReadOnlyDictionary<string, int[]> Units);

/// <summary>A layer's block influence: Σ (1 − cos(x_in, x_out)) over <paramref name="Tokens"/> real tokens.</summary>
public readonly record struct LayerInfluence(double Sum, long Tokens)
{
    public double Value => Tokens == 0 ? 0 : Sum / Tokens;
}
