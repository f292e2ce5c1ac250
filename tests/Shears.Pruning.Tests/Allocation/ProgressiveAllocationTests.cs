using Shears.Pruning.Allocation;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Allocation;

public class ProgressiveAllocationTests
{
    [Fact]
    public void ThreeEqualLayersByHand()
    {
        // Importance 3, 1, 2 → ranks 2, 0, 1 → r = 1, 0, 0.5 → u = 0.5·(1 + 0.5·(1 − 2r)) = 0.25, 0.75, 0.5.
        // Σ 100·u = 150 = 0.5 · 300 already, so c = 1.
        var a = ProgressiveAllocation.Allocate([100, 100, 100], [3.0, 1.0, 2.0], 0.5);
        Assert.Equal([25L, 75, 50], a.Counts);
        Assert.Equal([0.25, 0.75, 0.5], a.Sparsities);
    }

    [Fact]
    public void AFullLayerPassesTheRestToTheOthers()
    {
        // u = 0.8·1.5 = 1.2 and 0.8·0.5 = 0.4; with c = 1.5: 100·min(1, 1.8) + 100·0.6 = 160 = 0.8·200.
        var a = ProgressiveAllocation.Allocate([100, 100], [0.1, 0.9], 0.8);
        Assert.Equal([100L, 60], a.Counts);
    }

    [Fact]
    public void ZeroSpreadIsUniform()
    {
        var a = ProgressiveAllocation.Allocate([10, 10, 10, 10], [4.0, 3.0, 2.0, 1.0], 0.25, spread: 0);
        // 2.5 each: the four remainders tie, so the less important layers take the extra one.
        Assert.Equal([2L, 2, 3, 3], a.Counts);
        Assert.Equal(10, a.Counts.Sum());
    }

    [Fact]
    public void NoneAndAll()
    {
        Assert.Equal([0L, 0, 0], ProgressiveAllocation.Allocate([5, 6, 7], [1.0, 2.0, 3.0], 0).Counts);
        Assert.Equal([5L, 6, 7], ProgressiveAllocation.Allocate([5, 6, 7], [1.0, 2.0, 3.0], 1).Counts);
        Assert.Equal([5L, 6, 7], ProgressiveAllocation.Allocate([5, 6, 7], [1.0, 2.0, 3.0], 1, spread: 1).Counts);
    }

    [Fact]
    public void FullSpreadStillReachesTheTarget()
    {
        // α = 1 gives the most important layer u = 0; past what the others hold, it takes the rest.
        var a = ProgressiveAllocation.Allocate([100, 100], [0.1, 0.9], 0.9, spread: 1);
        Assert.Equal([100L, 80], a.Counts);
        var b = ProgressiveAllocation.Allocate([100, 100], [0.1, 0.9], 0.3, spread: 1);
        Assert.Equal([60L, 0], b.Counts);
    }

    [Fact]
    public void OneLayerGetsTheTarget()
    {
        Assert.Equal([7L], ProgressiveAllocation.Allocate([17], [0.3], 0.4).Counts);
    }

    [Fact]
    public void CountsSumExactlyToTheTargetAndTheLeastImportantGetTheMost()
    {
        var rng = new Random(8);
        for (int trial = 0; trial < 400; trial++)
        {
            int layers = rng.Next(1, 40);
            bool equalSizes = rng.Next(2) == 0;
            long size = rng.Next(1, 5000);
            long[] n = Enumerable.Range(0, layers).Select(_ => equalSizes ? size : rng.Next(0, 5000)).ToArray();
            double[] importance = Enumerable.Range(0, layers).Select(_ => rng.Next(3) == 0 ? 0.5 : rng.NextDouble()).ToArray();
            double s = rng.Next(5) == 0 ? rng.Next(2) : rng.NextDouble();
            double spread = rng.Next(4) == 0 ? rng.Next(2) : rng.NextDouble();

            var a = ProgressiveAllocation.Allocate(n, importance, s, spread);

            Assert.Equal(Counts.Target(s, n.Sum()), a.Counts.Sum());
            for (int i = 0; i < layers; i++) Assert.InRange(a.Counts[i], 0, n[i]);
            if (!equalSizes) continue;
            // Equal sizes: a less important layer is never pruned less (beyond one element of rounding).
            for (int i = 0; i < layers; i++)
                for (int j = 0; j < layers; j++)
                    if (importance[i] < importance[j]) Assert.True(a.Counts[i] + 1 >= a.Counts[j], $"trial {trial}");
        }
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => ProgressiveAllocation.Allocate([1, 2], [1.0], 0.5));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ProgressiveAllocation.Allocate([1], [1.0], 1.5));
        Assert.Contains("--sparsity", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ProgressiveAllocation.Allocate([1], [1.0], 0.5, spread: -0.1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ProgressiveAllocation.Allocate([-1], [1.0], 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ProgressiveAllocation.Allocate([1], [double.NaN], 0.5));
    }
}
