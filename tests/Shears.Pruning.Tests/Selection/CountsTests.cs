using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Selection;

public class CountsTests
{
    [Theory]
    [InlineData(0.4, 17, 7)]    // 6.8 → 7
    [InlineData(0.37, 100, 37)]
    [InlineData(0.5, 5, 2)]     // 2.5 → 2: half to even
    [InlineData(0.5, 7, 4)]     // 3.5 → 4
    [InlineData(0.5, 9, 4)]     // 4.5 → 4
    [InlineData(0.0, 17, 0)]
    [InlineData(1.0, 17, 17)]
    [InlineData(0.3, 0, 0)]
    [InlineData(0.875, 1000, 875)]
    public void TargetRoundsHalfToEven(double sparsity, long n, long expected) =>
        Assert.Equal(expected, Counts.Target(sparsity, n));

    [Fact]
    public void TargetOfSevenBillionElements() =>
        Assert.Equal(3_500_000_000L, Counts.Target(0.5, 7_000_000_000L));

    [Theory]
    [InlineData(-0.01)]
    [InlineData(1.01)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void TargetRejectsSparsityOutsideZeroToOne(double sparsity)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Counts.Target(sparsity, 10));
        Assert.Equal("sparsity", e.ParamName);
    }

    [Fact]
    public void TargetRejectsNegativeCount() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Counts.Target(0.5, -1));
}
