namespace Shears.Pruning.Selection;

/// <summary>
/// Which structured units (attention heads, MLP neurons) to prune, from one score per unit: the count follows the
/// cumulative sparsity over the units, lowest score first, ties by position.
/// </summary>
public static class UnitSelection
{
    /// <summary>
    /// The units to prune this round so that round_half_to_even(s × units) are pruned in all: lowest score first among
    /// those not already pruned, ties by lower index. Returned in ascending order; empty when
    /// <paramref name="alreadyPruned"/> already meets the target.
    /// </summary>
    public static int[] SelectLowest(double[] scores, double cumulativeSparsity, IReadOnlyCollection<int> alreadyPruned)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(alreadyPruned);
        CheckSparsity(cumulativeSparsity);
        CheckScores(scores, "");
        var done = new HashSet<int>();
        foreach (int u in alreadyPruned)
        {
            if (u < 0 || u >= scores.Length)
                throw new ArgumentOutOfRangeException(nameof(alreadyPruned), u, $"unit index must be in [0, {scores.Length})");
            done.Add(u);
        }
        long toPrune = Counts.Target(cumulativeSparsity, scores.Length) - done.Count;
        if (toPrune <= 0) return [];

        var candidates = Enumerable.Range(0, scores.Length).Where(u => !done.Contains(u)).ToList();
        candidates.Sort((a, b) => scores[a] != scores[b] ? scores[a].CompareTo(scores[b]) : a.CompareTo(b));
        var chosen = candidates.GetRange(0, (int)toPrune).ToArray();
        Array.Sort(chosen);
        return chosen;
    }

    /// <summary>
    /// Selection across layers: round_half_to_even(s × all units) pruned in all, lowest score first, ties by (layer,
    /// unit). Scores are compared as given, so they must be on a common scale. A layer may lose all its units.
    /// Returned in (layer, unit) order.
    /// </summary>
    public static (int Layer, int Unit)[] SelectLowestGlobal(
        IReadOnlyList<double[]> scoresPerLayer, double cumulativeSparsity, IReadOnlyCollection<(int Layer, int Unit)> alreadyPruned)
    {
        ArgumentNullException.ThrowIfNull(scoresPerLayer);
        ArgumentNullException.ThrowIfNull(alreadyPruned);
        CheckSparsity(cumulativeSparsity);
        long total = 0;
        for (int l = 0; l < scoresPerLayer.Count; l++)
        {
            var layer = scoresPerLayer[l] ?? throw new ArgumentException($"layer {l} has no scores", nameof(scoresPerLayer));
            CheckScores(layer, $"layer {l} ");
            total += layer.Length;
        }
        var done = new HashSet<(int Layer, int Unit)>();
        foreach (var (l, u) in alreadyPruned)
        {
            if (l < 0 || l >= scoresPerLayer.Count || u < 0 || u >= scoresPerLayer[l].Length)
                throw new ArgumentOutOfRangeException(nameof(alreadyPruned), (l, u), "no such (layer, unit)");
            done.Add((l, u));
        }
        long toPrune = Counts.Target(cumulativeSparsity, total) - done.Count;
        if (toPrune <= 0) return [];

        var candidates = new List<(double Score, int Layer, int Unit)>();
        for (int l = 0; l < scoresPerLayer.Count; l++)
            for (int u = 0; u < scoresPerLayer[l].Length; u++)
                if (!done.Contains((l, u))) candidates.Add((scoresPerLayer[l][u], l, u));
        candidates.Sort(); // (score, layer, unit): lexicographic, a total order
        var chosen = candidates.GetRange(0, (int)toPrune).Select(c => (c.Layer, c.Unit)).ToArray();
        Array.Sort(chosen);
        return chosen;
    }

    private static void CheckScores(double[] scores, string where)
    {
        for (int u = 0; u < scores.Length; u++)
            if (double.IsNaN(scores[u]))
                throw new ArgumentException($"{where}unit {u} has a NaN score", nameof(scores));
    }

    private static void CheckSparsity(double sparsity)
    {
        if (!(sparsity >= 0 && sparsity <= 1))
            throw new ArgumentOutOfRangeException("cumulativeSparsity", sparsity, "sparsity must be in [0, 1]");
    }
}
