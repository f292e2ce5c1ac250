using Shears.Pruning.Allocation;

namespace Shears.Pruning.Tests.Allocation;

public class LayerOutliersTests
{
    [Fact]
    public void ByHand()
    {
        // Nine scores of 1 and one of 21 over two tensors: mean 3, limit 5·3 = 15, one outlier in ten.
        var count = LayerOutliers.Count([[1, 1, 1, 1], [1, 1, 1, 1, 1, 21]], 5);
        Assert.Equal(new OutlierCount(1, 10), count);
        Assert.Equal(0.1, count.Ratio);
        // A score exactly at the limit is no outlier: mean 1, limit 5.
        Assert.Equal(0, LayerOutliers.Count([[0, 0, 0, 0, 5]], 5).Outliers);
        Assert.Equal(1, LayerOutliers.Count([[0, 0, 0, 0, 5]], 4.9).Outliers);
        Assert.Equal(0, LayerOutliers.Count([], 5).Ratio);
    }

    [Fact]
    public void RandomScoresAgainstAReference()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 100; trial++)
        {
            var scores = Enumerable.Range(0, random.Next(1, 5)).Select(_ =>
                Enumerable.Range(0, random.Next(0, 400)).Select(_ => random.Next(0, 3) == 0 ? random.Next(0, 4) : (float)Math.Pow(random.NextDouble(), 4) * 50).ToArray()).ToArray();
            double threshold = random.Next(0, 2) == 0 ? 5 : 1 + random.NextDouble() * 6;
            var all = scores.SelectMany(s => s).ToArray();
            long expected = all.Length == 0 ? 0 : all.Count(v => v > threshold * all.Select(x => (double)x).Average());
            var count = LayerOutliers.Count(scores, threshold);
            Assert.Equal(expected, count.Outliers);
            Assert.Equal(all.Length, count.Elements);
        }
    }

    [Fact]
    public void AThresholdThatIsNotPositiveIsRefused()
    {
        Assert.Contains("--owl-threshold", Assert.Throws<ArgumentOutOfRangeException>(() => LayerOutliers.Count([[1]], 0)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => LayerOutliers.Count([[1]], double.NaN));
    }
}
