using Shears.Pruning.Allocation;

namespace Shears.Engine.Rounds;

/// <summary>
/// OWL's allocation: per round, per selection group (tensor), the cumulative masked count to reach. A layer is a layer
/// stage and the tensors it holds; its count (<see cref="OwlAllocation"/>) is shared over its tensors by size.
/// </summary>
public static class OwlTargets
{
    /// <param name="ratios">Per layer stage, in the order of <see cref="RunLayout.LayerStages"/>: the outlier ratio.</param>
    public static long[][] Compute(RunLayout layout, IReadOnlyList<double> ratios, IReadOnlyList<double> targets, double lambda)
    {
        ArgumentNullException.ThrowIfNull(ratios);
        if (ratios.Count != layout.LayerStages.Count)
            throw new ArgumentException($"{layout.LayerStages.Count} layers but {ratios.Count} outlier ratios", nameof(ratios));
        // Each layer's groups in global position order.
        var groups = layout.LayerStages.Select(s => layout.Shards[s].OrderBy(p => layout.TensorOrder[p.Tensor]).Select(p => p.Group).Distinct().ToArray()).ToArray();
        var covered = groups.SelectMany(g => g).ToHashSet();
        for (int g = 0; g < layout.GroupElements.Count; g++)
            if (!covered.Contains(g)) throw new InvalidOperationException($"selection group {g} lies outside the model's layers; OWL allocates per layer");
        var layerElements = groups.Select(g => g.Sum(x => layout.GroupElements[x])).ToArray();
        return targets.Select(t =>
        {
            var counts = new long[layout.GroupElements.Count];
            var perLayer = OwlAllocation.Allocate(layerElements, ratios, t, lambda).Counts;
            for (int l = 0; l < groups.Length; l++)
            {
                var shares = OwlAllocation.Share(perLayer[l], groups[l].Select(g => layout.GroupElements[g]).ToArray());
                for (int i = 0; i < groups[l].Length; i++) counts[groups[l][i]] = shares[i];
            }
            return counts;
        }).ToArray();
    }
}
