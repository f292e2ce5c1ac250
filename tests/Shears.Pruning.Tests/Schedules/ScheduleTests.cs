using Shears.Pruning.Schedules;

namespace Shears.Pruning.Tests.Schedules;

public class ScheduleTests
{
    [Fact]
    public void OneShotIsTheFinalSparsityWhateverTheRounds()
    {
        Assert.Equal([0.5], Schedule.Targets(ScheduleKind.OneShot, 0.5, 1));
        Assert.Equal([0.5], Schedule.Targets(ScheduleKind.OneShot, 0.5, 4));
    }

    [Fact]
    public void LinearStepsEvenly()
    {
        var t = Schedule.Targets(ScheduleKind.Linear, 0.8, 4);
        Assert.Equal([0.2, 0.4, 0.6, 0.8], t.Select(x => Math.Round(x, 12)));
        Assert.Equal(0.8, t[^1]);

        var fromInitial = Schedule.Targets(ScheduleKind.Linear, 0.9, 2, initialSparsity: 0.5);
        Assert.Equal([0.7, 0.9], fromInitial.Select(x => Math.Round(x, 12)));
    }

    [Fact]
    public void CubicTakesBigStepsFirst()
    {
        // s_t = 0.8 + (0 − 0.8)(1 − t/4)³: 0.8·(1 − 27/64), 0.8·(1 − 1/8), 0.8·(1 − 1/64), 0.8
        var t = Schedule.Targets(ScheduleKind.Cubic, 0.8, 4);
        Assert.Equal([0.4625, 0.7, 0.7875, 0.8], t.Select(x => Math.Round(x, 12)));
        Assert.Equal(0.8, t[^1]);

        // From 0.5 to 0.9 in two rounds: 0.9 − 0.4·(1/2)³ = 0.85.
        Assert.Equal([0.85, 0.9], Schedule.Targets(ScheduleKind.Cubic, 0.9, 2, 0.5).Select(x => Math.Round(x, 12)));
    }

    [Fact]
    public void TargetsNeverDecreaseAndEndExactly()
    {
        var rng = new Random(2);
        for (int i = 0; i < 500; i++)
        {
            double final = rng.NextDouble();
            double initial = final * rng.NextDouble();
            var kind = (ScheduleKind)rng.Next(3);
            var t = Schedule.Targets(kind, final, rng.Next(1, 30), initial);
            Assert.Equal(final, t[^1]);
            for (int j = 1; j < t.Length; j++) Assert.True(t[j] >= t[j - 1]);
            Assert.All(t, x => Assert.InRange(x, initial, final));
        }
    }

    [Theory]
    [InlineData(0.5, 0, 0.0, "--rounds")]
    [InlineData(1.5, 3, 0.0, "--sparsity")]
    [InlineData(-0.1, 3, 0.0, "--sparsity")]
    [InlineData(double.NaN, 3, 0.0, "--sparsity")]
    [InlineData(0.5, 3, 0.6, "--sparsity")]
    public void BadArgumentsNameTheOption(double final, int rounds, double initial, string option)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Schedule.Targets(ScheduleKind.Linear, final, rounds, initial));
        Assert.Contains(option, e.Message);
    }

    [Fact]
    public void ThreeRoundsOfHalfWhatRemainsLeaveAnEighth()
    {
        double s = 0;
        for (int i = 0; i < 3; i++) s = Schedule.CumulativeAfter(s, 0.5);
        Assert.Equal(0.875, s);
        Assert.Equal(0.125, 1 - s);
    }

    [Fact]
    public void RoundAmountIsTheShareOfWhatRemains()
    {
        Assert.Equal(0.5, Schedule.RoundAmount(0.5, 0.75));
        Assert.Equal(0.8, Schedule.RoundAmount(0, 0.8));
        Assert.Equal(0, Schedule.RoundAmount(1, 1));
        Assert.Equal(0, Schedule.RoundAmount(0.3, 0.3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Schedule.RoundAmount(0.6, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => Schedule.CumulativeAfter(0.5, 1.5));

        var rng = new Random(4);
        for (int i = 0; i < 1000; i++)
        {
            double prev = rng.NextDouble() * 0.99, next = prev + (1 - prev) * rng.NextDouble();
            Assert.Equal(next, Schedule.CumulativeAfter(prev, Schedule.RoundAmount(prev, next)), 12);
        }
    }
}
