using Shears.Pruning.Selection;

namespace Shears.Pruning.Allocation;

/// <summary>Per-layer masked counts and the sparsities they give (0 for an empty layer).</summary>
public sealed record LayerAllocation(long[] Counts, double[] Sparsities);

/// <summary>
/// Progressive per-layer allocation: less important layers are pruned more, and the counts add up
/// to exactly <see cref="Counts.Target"/>(s, N) over the N elements of all layers.
/// </summary>
/// <remarks>
/// <para>With L layers of n_i elements and importance a_i (the caller passes mean |w|):</para>
/// <list type="number">
/// <item>Rank the layers by importance ascending, ties by lower index; r_i = rank / (L − 1) in
/// [0, 1] (0.5 when L = 1), so the least important layer has r = 0.</item>
/// <item>Raw sparsity u_i = s · (1 + α · (1 − 2 r_i)): from s(1 + α) for the least important to
/// s(1 − α) for the most important. α = 0 is uniform.</item>
/// <item>Find c by bisection so that Σ n_i · clamp(c · u_i, 0, 1) = s · N: the clamp at 1 moves
/// what a fully pruned layer cannot take onto the others. If the layers with u_i &gt; 0 cannot
/// hold s · N (α = 1 leaves the most important at 0), they are pruned fully and the rest is spread
/// uniformly over the others.</item>
/// <item>Round the real counts p_i = n_i · clamp(c · u_i, 0, 1) to integers k_i with 0 ≤ k_i ≤ n_i
/// and Σ k_i = Counts.Target(s, N) by largest remainder (ties: less important layer first,
/// then lower index).</item>
/// </list>
/// </remarks>
public static class ProgressiveAllocation
{
    public const double DefaultSpread = 0.5;

    public static LayerAllocation Allocate(IReadOnlyList<long> elements, IReadOnlyList<double> importance, double sparsity, double spread = DefaultSpread)
    {
        ArgumentNullException.ThrowIfNull(elements);
        ArgumentNullException.ThrowIfNull(importance);
        int layers = elements.Count;
        if (importance.Count != layers)
            throw new ArgumentException($"{layers} layers but {importance.Count} importances", nameof(importance));
        if (!(sparsity >= 0 && sparsity <= 1))
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, $"--sparsity must be between 0 and 1, got {sparsity}");
        if (!(spread >= 0 && spread <= 1))
            throw new ArgumentOutOfRangeException(nameof(spread), spread, $"the spread α must be between 0 and 1, got {spread}");
        long total = 0;
        for (int i = 0; i < layers; i++)
        {
            if (elements[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(elements), elements[i], $"layer {i} has a negative element count");
            if (!double.IsFinite(importance[i]))
                throw new ArgumentOutOfRangeException(nameof(importance), importance[i], $"layer {i} has an importance that is not a finite number");
            total += elements[i];
        }

        long target = Counts.Target(sparsity, total);
        int[] order = Enumerable.Range(0, layers).OrderBy(i => importance[i]).ThenBy(i => i).ToArray();
        var rank = new int[layers];
        for (int r = 0; r < layers; r++) rank[order[r]] = r;

        var raw = new double[layers];
        for (int i = 0; i < layers; i++)
        {
            double r = layers == 1 ? 0.5 : (double)rank[i] / (layers - 1);
            raw[i] = sparsity * (1 + spread * (1 - 2 * r));
        }

        double[] real = RealCounts(elements, raw, sparsity * total);
        long[] counts = Apportion(elements, real, rank, target);

        var sparsities = new double[layers];
        for (int i = 0; i < layers; i++) sparsities[i] = elements[i] == 0 ? 0 : (double)counts[i] / elements[i];
        return new LayerAllocation(counts, sparsities);
    }

    // p_i = n_i · clamp(c · u_i, 0, 1) with Σ p_i = goal.
    private static double[] RealCounts(IReadOnlyList<long> elements, double[] raw, double goal)
    {
        int layers = raw.Length;
        var real = new double[layers];
        if (goal <= 0) return real;

        double capacity = 0, smallestPositive = double.PositiveInfinity;
        for (int i = 0; i < layers; i++)
        {
            if (raw[i] <= 0) continue;
            capacity += elements[i];
            smallestPositive = Math.Min(smallestPositive, raw[i]);
        }

        if (capacity <= goal)
        {
            // Prune every layer with u > 0 fully and spread the rest over the others.
            double rest = 0;
            for (int i = 0; i < layers; i++) if (raw[i] <= 0) rest += elements[i];
            double fraction = rest == 0 ? 0 : Math.Min(1, (goal - capacity) / rest);
            for (int i = 0; i < layers; i++) real[i] = raw[i] > 0 ? elements[i] : elements[i] * fraction;
            return real;
        }

        double lo = 0, hi = 1 / smallestPositive; // f(hi) = capacity > goal
        for (int step = 0; step < 200; step++)
        {
            double mid = lo + (hi - lo) / 2;
            if (mid <= lo || mid >= hi) break;
            if (Sum(elements, raw, mid) < goal) lo = mid;
            else hi = mid;
        }
        for (int i = 0; i < layers; i++) real[i] = elements[i] * Math.Clamp(hi * raw[i], 0, 1);
        return real;
    }

    private static double Sum(IReadOnlyList<long> elements, double[] raw, double scale)
    {
        double sum = 0;
        for (int i = 0; i < raw.Length; i++) sum += elements[i] * Math.Clamp(scale * raw[i], 0, 1);
        return sum;
    }

    // Largest remainder: floors first, then one more to the largest fractional parts until the
    // total is exact (or one fewer from the smallest, should rounding error overshoot).
    internal static long[] Apportion(IReadOnlyList<long> elements, double[] real, int[] rank, long target)
    {
        int layers = real.Length;
        var counts = new long[layers];
        var remainder = new double[layers];
        long sum = 0;
        for (int i = 0; i < layers; i++)
        {
            double p = Math.Clamp(real[i], 0, elements[i]);
            counts[i] = Math.Min(elements[i], (long)Math.Floor(p));
            remainder[i] = p - counts[i];
            sum += counts[i];
        }

        int[] byRemainder = Enumerable.Range(0, layers)
            .OrderByDescending(i => remainder[i]).ThenBy(i => rank[i]).ThenBy(i => i).ToArray();
        while (sum < target)
        {
            foreach (int i in byRemainder)
            {
                if (sum == target) break;
                if (counts[i] < elements[i]) { counts[i]++; sum++; }
            }
        }
        while (sum > target)
        {
            for (int j = layers - 1; j >= 0 && sum > target; j--)
            {
                int i = byRemainder[j];
                if (counts[i] > 0) { counts[i]--; sum--; }
            }
        }
        return counts;
    }
}
