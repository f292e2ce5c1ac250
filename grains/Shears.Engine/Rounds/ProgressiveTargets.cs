using Shears.Pruning.Allocation;

namespace Shears.Engine.Rounds;

/// <summary>Progressive allocation: per round, per selection group (tensor), the cumulative masked count to reach.</summary>
public static class ProgressiveTargets
{
    /// <param name="absSumPerPiece">Per shard, per piece: Σ|w|, which ranks the layers by mean magnitude.</param>
    public static long[][] Compute(RunLayout layout, IReadOnlyList<double[]> absSumPerPiece, IReadOnlyList<double> targets, double spread)
    {
        var absSum = new double[layout.GroupElements.Count];
        for (int s = 0; s < layout.Shards.Count; s++)
            for (int p = 0; p < layout.Shards[s].Count; p++)
                absSum[layout.Shards[s][p].Group] += absSumPerPiece[s][p];
        var importance = absSum.Select((sum, g) => sum / layout.GroupElements[g]).ToArray();
        return targets.Select(t => ProgressiveAllocation.Allocate(layout.GroupElements, importance, t, spread).Counts).ToArray();
    }
}
