using Shears.Contracts;
using Shears.Engine;

namespace Shears.Grains;

/// <summary>
/// Between the wire records that grains exchange and the engine's own: the engine knows nothing of Orleans, and the
/// messages stay what they were.
/// </summary>
internal static class EngineWire
{
    public static RunRecipe Recipe(RunSpec spec) =>
        RunRecipe.Parse(spec.Method, spec.Pattern, spec.Scope, spec.Norm, spec.HeadScore, spec.Seed, spec.Sparsity) with
        {
            BalancedHeadGroups = spec.Remove && spec.Pattern == RunOptions.Patterns.Heads,
            SyntheticWeightsSeed = spec.SyntheticWeights,
        };

    public static ShardPiece Piece(TensorPiece p) => new(p.Tensor, p.RowStart, p.RowCount, p.RowElements, p.Group);

    public static HeadGeometry? Heads(HeadLayout? layout) =>
        layout is null ? null : new HeadGeometry(layout.Heads, layout.KvHeads, layout.HeadDim, layout.Hidden);

    public static HistogramQuery Query(HistogramRequest r) => new(r.Group, r.Level, r.Prefix);
    public static HistogramRequest Request(HistogramQuery q) => new() { Group = q.Group, Level = q.Level, Prefix = q.Prefix };
    public static HistogramResult Result(GroupHistogram h) => new() { Counts = h.Counts, LowBitsZero = h.LowBitsZero };
    public static GroupHistogram Histogram(HistogramResult r) => new(r.Counts, r.LowBitsZero);

    public static CountQuery Query(CountRequest r) => new(r.Group, r.Threshold);
    public static CountRequest Request(CountQuery q) => new() { Group = q.Group, Threshold = q.Threshold };
    public static ThresholdCounts Result(PieceCounts c) => new() { Less = c.Less, Equal = c.Equal };
    public static PieceCounts Counts(ThresholdCounts c) => new(c.Less, c.Equal);

    public static ThresholdDecision Decision(MaskDecision d) => new(d.Round, d.Thresholds, d.Ties);
    public static MaskDecision Decision(ThresholdDecision d) => new() { Round = d.Round, Thresholds = d.Thresholds, Ties = d.Ties };
    public static LocalDecision Decision(LocalRoundRequest r) => new(r.Round, r.Sparsity, r.TargetMasked);
    public static LocalRoundRequest Request(LocalDecision d) => new() { Round = d.Round, Sparsity = d.Sparsity, TargetMasked = d.TargetMasked };

    public static UnitScores Result(UnitScoreSet s) => new() { Layers = s.Layers, Scores = s.Scores, Pruned = s.Pruned };
    public static UnitScoreSet Scores(UnitScores s) => new(s.Layers, s.Scores, s.Pruned);
    public static UnitChoice Choice(UnitDecision d) => new(d.Round, d.Units);
    public static UnitDecision Decision(UnitChoice c) => new() { Round = c.Round, Units = c.Units };
}
