using Shears.Pruning.Allocation;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Allocation;

public class OwlAllocationTests
{
    [Fact]
    public void FourEqualLayersByHand()
    {
        // D = 0.5 %, 1 %, 2 %, 4.5 %: r = 0.16·(D − 0.5 %)/4 % = 0, 0.02, 0.06, 0.16; the authors' shift mean(r) = 0.06
        // gives 0.56, 0.54, 0.50, 0.40, and 0.40 lies below s − λ = 0.42. Clamped there, the other three share the
        // rest: (0.5 + c) + (0.48 + c) + (0.44 + c) + 0.42 = 2 → c = 0.16/3, s_l = 0.5533…, 0.5333…, 0.4933…, 0.42.
        var s = OwlAllocation.Sparsities([300, 300, 300, 300], [0.005, 0.01, 0.02, 0.045], 0.5, 0.08);
        Assert.Equal([0.5 + 0.16 / 3, 0.48 + 0.16 / 3, 0.44 + 0.16 / 3, 0.42], s, (a, b) => Math.Abs(a - b) < 1e-12);
        // × 300: 166, 160, 148, 126, which add up to round_half_to_even(0.5 × 1200) = 600.
        var a = OwlAllocation.Allocate([300, 300, 300, 300], [0.005, 0.01, 0.02, 0.045], 0.5, 0.08);
        Assert.Equal([166L, 160, 148, 126], a.Counts);
    }

    [Fact]
    public void EqualRatiosOrZeroLambdaAreUniform()
    {
        // 2.5 each, the remainders tie: the layers with fewer outliers (here all equal: the lower index) take one more.
        Assert.Equal([3L, 3, 2, 2], OwlAllocation.Allocate([10, 10, 10, 10], [0.02, 0.02, 0.02, 0.02], 0.25).Counts);
        Assert.Equal([3L, 2, 3, 2], OwlAllocation.Allocate([10, 10, 10, 10], [0.01, 0.05, 0.02, 0.07], 0.25, lambda: 0).Counts);
    }

    [Fact]
    public void MatchesTheAuthorsFormulaWhenNoLayerLeavesTheInterval()
    {
        // The authors' code: r = 2λ(D − min)/(max − min), s_l = s + mean(r) − r_l. Ratios mirrored about their middle
        // give mean(r) = λ, so every s_l lies in [s − λ, s + λ] and the clamp never acts.
        var random = new Random(14);
        for (int trial = 0; trial < 200; trial++)
        {
            int half = random.Next(1, 8);
            double lo = random.NextDouble() * 0.05, width = 0.001 + random.NextDouble() * 0.05;
            var d = new List<double> { lo, lo + width };
            for (int i = 1; i < half; i++)
            {
                double x = random.Next(0, 4) == 0 ? d[random.Next(d.Count)] - lo : random.NextDouble() * width; // ties too
                d.Add(lo + x);
                d.Add(lo + width - x);
            }
            var ratios = d.OrderBy(_ => random.Next()).ToArray();
            double s = 0.1 + random.NextDouble() * 0.8, lambda = random.NextDouble() * Math.Min(0.1, Math.Min(s, 1 - s));
            var r = ratios.Select(x => 2 * lambda * (x - ratios.Min()) / (ratios.Max() - ratios.Min())).ToArray();
            var authors = r.Select(x => s + r.Average() - x).ToArray();
            var elements = Enumerable.Repeat(1000L + random.Next(1000), ratios.Length).ToArray();
            Assert.Equal(authors, OwlAllocation.Sparsities(elements, ratios, s, lambda), (a, b) => Math.Abs(a - b) < 1e-9);
        }
    }

    [Fact]
    public void RandomLayersAgainstAReference()
    {
        var random = new Random(2024);
        for (int trial = 0; trial < 300; trial++)
        {
            int layers = random.Next(1, 12);
            var elements = Enumerable.Range(0, layers).Select(_ => random.Next(0, 5) == 0 ? (long)random.Next(1, 20) : random.Next(100, 100_000)).ToArray();
            // Outlier ratios with ties: drawn from a few levels.
            var levels = Enumerable.Range(0, random.Next(1, 5)).Select(_ => random.NextDouble() * 0.1).ToArray();
            var ratios = Enumerable.Range(0, layers).Select(_ => levels[random.Next(levels.Length)]).ToArray();
            double s = random.Next(0, 6) == 0 ? random.Next(0, 2) : random.NextDouble();
            double lambda = random.Next(0, 5) == 0 ? 0 : random.NextDouble() * 0.2;

            var sparsities = OwlAllocation.Sparsities(elements, ratios, s, lambda);
            var reference = ReferenceSparsities(elements, ratios, s, lambda);
            Assert.Equal(reference, sparsities, (a, b) => Math.Abs(a - b) < 1e-9);

            var a = OwlAllocation.Allocate(elements, ratios, s, lambda);
            Assert.Equal(Counts.Target(s, elements.Sum()), a.Counts.Sum());
            Assert.Equal(ReferenceCounts(elements, ratios, reference, Counts.Target(s, elements.Sum())), a.Counts);
            for (int l = 0; l < layers; l++)
            {
                Assert.InRange(a.Counts[l], 0, elements[l]);
                Assert.True(Math.Abs(a.Counts[l] - elements[l] * sparsities[l]) < 1 + 1e-6, $"layer {l}: {a.Counts[l]} for {elements[l] * sparsities[l]}");
            }
        }
    }

    [Fact]
    public void LargerTargetsNestLayerByLayer()
    {
        var random = new Random(5);
        for (int trial = 0; trial < 100; trial++)
        {
            var elements = Enumerable.Range(0, 6).Select(_ => (long)random.Next(1000, 5000)).ToArray();
            var ratios = elements.Select(_ => random.NextDouble() * 0.05).ToArray();
            double s = random.NextDouble() * 0.9, more = s + random.NextDouble() * (1 - s);
            var first = OwlAllocation.Sparsities(elements, ratios, s);
            var second = OwlAllocation.Sparsities(elements, ratios, more);
            for (int l = 0; l < elements.Length; l++) Assert.True(second[l] >= first[l] - 1e-12, $"layer {l}: {first[l]} then {second[l]}");
        }
    }

    [Fact]
    public void ShareSplitsALayerCountOverItsTensorsBySize()
    {
        Assert.Equal([3L, 3, 4], OwlAllocation.Share(10, [3, 3, 4]));
        // 5/3 each: floors 1, 1, 1, then the two largest remainders, which tie: lower index first.
        Assert.Equal([2L, 2, 1], OwlAllocation.Share(5, [2, 2, 2]));
        Assert.Equal([0L, 7], OwlAllocation.Share(7, [0, 9]));
        Assert.Throws<ArgumentOutOfRangeException>(() => OwlAllocation.Share(10, [3, 3]));
    }

    [Fact]
    public void BadInputsAreRefusedByName()
    {
        Assert.Contains("--owl-lambda", Assert.Throws<ArgumentOutOfRangeException>(() => OwlAllocation.Sparsities([1], [0.1], 0.5, 0.7)).Message);
        Assert.Contains("--sparsity", Assert.Throws<ArgumentOutOfRangeException>(() => OwlAllocation.Sparsities([1], [0.1], 1.5)).Message);
        Assert.Contains("layer 1", Assert.Throws<ArgumentOutOfRangeException>(() => OwlAllocation.Sparsities([1, 1], [0.1, double.NaN], 0.5)).Message);
        Assert.Contains("2 layers but 1", Assert.Throws<ArgumentException>(() => OwlAllocation.Sparsities([1, 1], [0.1], 0.5)).Message);
    }

    /// <summary>
    /// The definition, solved another way: s_l(c) = clamp(s + c − r_l, max(0, s − λ), min(1, s + λ)) is piecewise linear
    /// in c; walk its breakpoints in order and solve Σ n_l s_l(c) = s·N on the piece that holds the answer.
    /// </summary>
    private static double[] ReferenceSparsities(long[] n, double[] d, double s, double lambda)
    {
        double min = d.Min(), max = d.Max();
        var r = d.Select(x => max > min ? 2 * lambda * (x - min) / (max - min) : 0).ToArray();
        double lo = Math.Max(0, s - lambda), hi = Math.Min(1, s + lambda);
        double F(double c) => n.Select((x, l) => x * Math.Clamp(s + c - r[l], lo, hi)).Sum();
        double goal = s * n.Sum();
        // Breakpoints: where a layer leaves lo (c = lo − s + r) or reaches hi (c = hi − s + r).
        var points = r.SelectMany(x => new[] { lo - s + x, hi - s + x }).Distinct().OrderBy(x => x).ToArray();
        double c = points[0];
        if (F(points[0]) < goal)
        {
            c = points[^1];
            for (int i = 0; i + 1 < points.Length; i++)
            {
                double f0 = F(points[i]), f1 = F(points[i + 1]);
                if (f1 >= goal && f1 > f0) { c = points[i] + (goal - f0) / (f1 - f0) * (points[i + 1] - points[i]); break; }
            }
        }
        return r.Select(x => Math.Clamp(s + c - x, lo, hi)).ToArray();
    }

    /// <summary>Largest remainder: floors, then one more to each layer in order of remainder (ties: fewer outliers, lower index).</summary>
    private static long[] ReferenceCounts(long[] n, double[] d, double[] sparsities, long target)
    {
        var real = n.Select((x, l) => Math.Min(x, x * sparsities[l])).ToArray();
        var counts = real.Select(x => (long)Math.Floor(x)).ToArray();
        var order = Enumerable.Range(0, n.Length).OrderByDescending(l => real[l] - counts[l]).ThenBy(l => d[l]).ThenBy(l => l).ToList();
        long missing = target - counts.Sum();
        foreach (int l in order)
        {
            if (missing <= 0) break;
            if (counts[l] < n[l]) { counts[l]++; missing--; }
        }
        return counts;
    }
}
