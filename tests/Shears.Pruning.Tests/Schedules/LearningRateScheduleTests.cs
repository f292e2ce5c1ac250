using Shears.Pruning.Schedules;

namespace Shears.Pruning.Tests.Schedules;

public class LearningRateScheduleTests
{
    [Fact]
    public void CosineWithWarmupByHand()
    {
        // lr 1, 10 steps, 2 of warm-up: 0, ½, then ½(1 + cos(π(t − 2)/8)): 1 at t = 2, ½ at t = 6, 0.0380602 at t = 9.
        var lr = Enumerable.Range(0, 10).Select(t => LearningRateSchedule.At(LearningRateShape.Cosine, 1, t, 10, 2)).ToArray();
        Assert.Equal(0, lr[0]);
        Assert.Equal(0.5, lr[1]);
        Assert.Equal(1, lr[2]);
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI / 8)), lr[3], 15);
        Assert.Equal(0.5, lr[6], 15);
        Assert.Equal(0.0380602337443566, lr[9], 12);
        Assert.True(lr.Skip(2).Zip(lr.Skip(3)).All(p => p.Second < p.First), "cosine decays after the warm-up");
    }

    [Fact]
    public void ConstantWithAndWithoutWarmupByHand()
    {
        Assert.Equal([0, 0.5, 1, 1.5, 2, 2, 2], Enumerable.Range(0, 7).Select(t => LearningRateSchedule.At(LearningRateShape.Constant, 2, t, 7, 4)));
        Assert.Equal([3e-5, 3e-5, 3e-5], Enumerable.Range(0, 3).Select(t => LearningRateSchedule.At(LearningRateShape.Constant, 3e-5, t, 3, 0)));
        // No warm-up, one step: the full rate.
        Assert.Equal(1e-4, LearningRateSchedule.At(LearningRateShape.Cosine, 1e-4, 0, 1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.At(LearningRateShape.Cosine, 1, 5, 5, 0));
    }
}
