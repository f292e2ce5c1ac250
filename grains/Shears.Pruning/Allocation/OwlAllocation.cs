using Shears.Pruning.Selection;

namespace Shears.Pruning.Allocation;

/// <summary>
/// Outlier-weighted layerwise sparsity (OWL; Yin et al. 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing
/// Secret Sauce for Pruning LLMs to High Sparsity"): layers with more outliers are pruned less, and the counts add up
/// to exactly <see cref="Counts.Target"/>(s, N) over the N elements of all layers.
/// </summary>
/// <remarks>
/// <para>With L layers of n_l elements and outlier ratios D_l (<see cref="LayerOutliers"/>), target s and λ:</para>
/// <list type="number">
/// <item>r_l = 2λ·(D_l − min D)/(max D − min D), in [0, 2λ] (all 0 when every D_l is equal: uniform).</item>
/// <item>s_l = clamp(s + c − r_l, max(0, s − λ), min(1, s + λ)), with the common shift c found by bisection so that
/// Σ n_l·s_l = s·N. The authors' code takes c = mean(r) and leaves the result unclamped; with layers of one size and
/// no layer pushed past s ± λ (the interval the paper states) the two agree. The clamp keeps every layer within
/// λ of the target, and weighting by n_l keeps the sparsity of the whole exactly s when layers differ in size.</item>
/// <item>Integer counts from n_l·s_l by largest remainder, as <see cref="ProgressiveAllocation"/> rounds (ties: the
/// layer with fewer outliers first, then the lower index).</item>
/// </list>
/// <para>Since the shift c does not depend on s where neither 0 nor 1 clamps, s_l grows with s: the rounds of a
/// schedule nest.</para>
/// </remarks>
public static class OwlAllocation
{
    public const double DefaultThreshold = 5;
    public const double DefaultLambda = 0.08;

    /// <summary>The layers' real-valued sparsities s_l (before rounding to counts).</summary>
    public static double[] Sparsities(IReadOnlyList<long> elements, IReadOnlyList<double> outlierRatios, double sparsity, double lambda = DefaultLambda)
    {
        Check(elements, outlierRatios, sparsity, lambda);
        int layers = elements.Count;
        var result = new double[layers];
        if (layers == 0) return result;
        double min = outlierRatios.Min(), max = outlierRatios.Max();
        var r = new double[layers];
        if (max > min)
            for (int l = 0; l < layers; l++) r[l] = 2 * lambda * (outlierRatios[l] - min) / (max - min);
        double lo = Math.Max(0, sparsity - lambda), hi = Math.Min(1, sparsity + lambda);
        double total = elements.Sum(n => (double)n);
        if (total == 0) { Array.Fill(result, sparsity); return result; }

        double Spread(double c)
        {
            double sum = 0;
            for (int l = 0; l < layers; l++) sum += elements[l] * Math.Clamp(sparsity + c - r[l], lo, hi);
            return sum;
        }
        // Spread is nondecreasing in c: every layer at lo below cLo, at hi above cHi, and lo ≤ s ≤ hi.
        double goal = sparsity * total, cLo = -1 - 2 * lambda, cHi = 1 + 2 * lambda;
        for (int step = 0; step < 200; step++)
        {
            double mid = cLo + (cHi - cLo) / 2;
            if (mid <= cLo || mid >= cHi) break;
            if (Spread(mid) < goal) cLo = mid;
            else cHi = mid;
        }
        for (int l = 0; l < layers; l++) result[l] = Math.Clamp(sparsity + cHi - r[l], lo, hi);
        return result;
    }

    /// <summary>Per-layer masked counts adding up to exactly round_half_to_even(s × N).</summary>
    public static LayerAllocation Allocate(IReadOnlyList<long> elements, IReadOnlyList<double> outlierRatios, double sparsity, double lambda = DefaultLambda)
    {
        var sparsities = Sparsities(elements, outlierRatios, sparsity, lambda);
        int layers = elements.Count;
        long total = elements.Sum();
        var rank = new int[layers];
        int[] order = Enumerable.Range(0, layers).OrderBy(l => outlierRatios[l]).ThenBy(l => l).ToArray();
        for (int i = 0; i < layers; i++) rank[order[i]] = i;
        var real = new double[layers];
        for (int l = 0; l < layers; l++) real[l] = elements[l] * sparsities[l];
        long[] counts = ProgressiveAllocation.Apportion(elements, real, rank, Counts.Target(sparsity, total));
        var achieved = new double[layers];
        for (int l = 0; l < layers; l++) achieved[l] = elements[l] == 0 ? 0 : (double)counts[l] / elements[l];
        return new LayerAllocation(counts, achieved);
    }

    /// <summary>
    /// A layer's count shared over its tensors in proportion to their sizes (largest remainder, ties by lower index),
    /// so that the tensors' counts add up to exactly <paramref name="count"/>.
    /// </summary>
    public static long[] Share(long count, IReadOnlyList<long> elements)
    {
        ArgumentNullException.ThrowIfNull(elements);
        long total = elements.Sum();
        if (count < 0 || count > total)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"a count of {count} does not fit {total} elements");
        var real = elements.Select(n => total == 0 ? 0 : (double)count * n / total).ToArray();
        return ProgressiveAllocation.Apportion(elements, real, Enumerable.Range(0, elements.Count).ToArray(), count);
    }

    private static void Check(IReadOnlyList<long> elements, IReadOnlyList<double> outlierRatios, double sparsity, double lambda)
    {
        ArgumentNullException.ThrowIfNull(elements);
        ArgumentNullException.ThrowIfNull(outlierRatios);
        if (outlierRatios.Count != elements.Count)
            throw new ArgumentException($"{elements.Count} layers but {outlierRatios.Count} outlier ratios", nameof(outlierRatios));
        if (!(sparsity >= 0 && sparsity <= 1))
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, $"--sparsity must be between 0 and 1, got {sparsity}");
        if (!(lambda >= 0 && lambda <= 0.5))
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, $"--owl-lambda must be between 0 and 0.5, got {lambda}");
        for (int l = 0; l < elements.Count; l++)
        {
            if (elements[l] < 0) throw new ArgumentOutOfRangeException(nameof(elements), elements[l], $"layer {l} has a negative element count");
            if (!(outlierRatios[l] >= 0 && outlierRatios[l] <= 1))
                throw new ArgumentOutOfRangeException(nameof(outlierRatios), outlierRatios[l], $"layer {l} has an outlier ratio outside [0, 1]");
        }
    }
}
