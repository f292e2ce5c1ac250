using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Schedules;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Selection;

public class LocalSelectionTests
{
    private static uint[] Keys(params float[] scores) => scores.Select(ScoreKeys.FromScore).ToArray();

    [Fact]
    public void FourTenthsOfSeventeenMasksTheSevenSmallest()
    {
        // |w| = 17, 3, 9, 1, 12, 5, 16, 7, 2, 14, 11, 4, 15, 6, 10, 13, 8: the seven smallest are 1..7.
        float[] scores = [17, 3, 9, 1, 12, 5, 16, 7, 2, 14, 11, 4, 15, 6, 10, 13, 8];
        var mask = new BitMask(17);

        var result = LocalSelection.MaskToTarget(Keys(scores), mask, 0.4);

        Assert.Equal(7, result.Masked);
        Assert.Equal(7f, ScoreKeys.ToScore(result.ThresholdKey));
        for (int i = 0; i < 17; i++) Assert.Equal(scores[i] <= 7, mask[i]);
    }

    [Fact]
    public void TiesGoToTheLowerIndexFirst()
    {
        var mask = new BitMask(6);

        var result = LocalSelection.MaskSmallest(Keys(5, 1, 5, 1, 5, 5), mask, 4);

        // Both 1s, then the 5s at indices 0 and 2.
        Assert.Equal([true, true, true, true, false, false], mask.ToBools());
        Assert.Equal(new SelectionResult(4, ScoreKeys.FromScore(5)), result);
    }

    [Fact]
    public void SignDoesNotMatterAndInfinityRanksLargest()
    {
        float[] weights = [-0f, float.NegativeInfinity, -3, 2, float.PositiveInfinity, 0, float.Epsilon];
        var raw = weights.SelectMany(BitConverter.GetBytes).ToArray();
        var keys = new uint[weights.Length];
        ScoreKeys.Magnitude(raw, TensorDType.F32, keys, "w");
        var mask = new BitMask(weights.Length);

        LocalSelection.MaskSmallest(keys, mask, 5);

        // -0 and 0 tie (index 0 first), then the subnormal, then 2, then -3; both infinities stay.
        Assert.Equal([true, false, true, true, false, true, true], mask.ToBools());
    }

    [Fact]
    public void ThreeRoundsOfHalfWhatRemainsLeaveAnEighth()
    {
        var rng = new Random(3);
        var keys = Enumerable.Range(0, 1000).Select(_ => (uint)rng.Next(1 << 20)).ToArray();
        var mask = new BitMask(1000);
        double cumulative = 0;
        long[] maskedAfter = new long[3];

        for (int round = 0; round < 3; round++)
        {
            cumulative = Schedule.CumulativeAfter(cumulative, 0.5);
            LocalSelection.MaskToTarget(keys, mask, cumulative);
            maskedAfter[round] = mask.CountSet();
        }

        Assert.Equal(0.875, cumulative);
        Assert.Equal([500L, 750L, 875L], maskedAfter);
        Assert.Equal(125, mask.Length - mask.CountSet()); // 12.5% unmasked
    }

    [Fact]
    public void MasksOnlyGrow()
    {
        var keys = Keys(1, 2, 3, 4, 5, 6, 7, 8);
        var mask = BitMask.FromBools([false, false, false, false, false, false, false, true]); // 8 is already masked

        var result = LocalSelection.MaskToTarget(keys, mask, 0.5);
        Assert.Equal(3, result.Masked); // 4 in all: 8, then 1, 2, 3
        Assert.Equal([true, true, true, false, false, false, false, true], mask.ToBools());

        var lower = LocalSelection.MaskToTarget(keys, mask, 0.25);
        Assert.Equal(new SelectionResult(0, 0), lower);
        Assert.Equal(4, mask.CountSet());
    }

    [Fact]
    public void AskingForMoreThanIsUnmaskedChangesNothing()
    {
        var mask = BitMask.FromBools([true, false, false]);
        Assert.Throws<ArgumentOutOfRangeException>(() => LocalSelection.MaskSmallest(Keys(1, 2, 3), mask, 3));
        Assert.Equal([true, false, false], mask.ToBools());
    }

    [Fact]
    public void MaskMustCoverTheKeys() =>
        Assert.Throws<ArgumentException>(() => LocalSelection.MaskSmallest(Keys(1, 2, 3), new BitMask(4), 1));

    [Fact]
    public void MaskingEverythingAndNothing()
    {
        var keys = Keys(3, 0, float.PositiveInfinity, 3);
        var mask = new BitMask(4);
        Assert.Equal(new SelectionResult(0, 0), LocalSelection.MaskToTarget(keys, mask, 0));
        Assert.Equal(0, mask.CountSet());
        Assert.Equal(new SelectionResult(4, ScoreKeys.InfinityKey), LocalSelection.MaskToTarget(keys, mask, 1));
        Assert.Equal(4, mask.CountSet());
    }

    [Fact]
    public void EmptyTensor()
    {
        Assert.Equal(new SelectionResult(0, 0), LocalSelection.MaskToTarget([], new BitMask(0), 0.5));
    }

    [Fact]
    public void MatchesTheReferenceOnRandomData()
    {
        for (int seed = 0; seed < 300; seed++)
        {
            var rng = new Random(seed);
            int n = rng.Next(4) == 0 ? rng.Next(1, 8) : rng.Next(1, 700);
            var (_, keys) = TestWeights.Make(rng, n, TestWeights.AnyDType(rng));
            var before = TestWeights.RandomMask(rng, n);
            var mask = BitMask.FromBools(before);
            long unmasked = before.Count(m => !m);
            long count = rng.Next(5) == 0 ? unmasked : rng.NextInt64(unmasked + 1);

            var expected = ReferenceSelection.MaskSmallest(keys, before, count);
            var result = LocalSelection.MaskSmallest(keys, mask, count);

            Assert.True(expected.AsSpan().SequenceEqual(mask.ToBools()), $"seed {seed}");
            Assert.Equal(count, result.Masked);
            uint largest = count == 0 ? 0 : Enumerable.Range(0, n).Where(i => expected[i] && !before[i]).Max(i => keys[i]);
            Assert.Equal(largest, result.ThresholdKey);
        }
    }

    [Fact]
    public void CumulativeRoundsMatchTheReference()
    {
        for (int seed = 0; seed < 60; seed++)
        {
            var rng = new Random(1000 + seed);
            int n = rng.Next(1, 1500);
            var (_, keys) = TestWeights.Make(rng, n, TestWeights.AnyDType(rng));
            var kind = (ScheduleKind)rng.Next(3);
            var targets = Schedule.Targets(kind, rng.NextDouble(), rng.Next(1, 6));
            var mask = new BitMask(n);
            var reference = new bool[n];

            foreach (double s in targets)
            {
                long more = Counts.Target(s, n) - reference.Count(m => m);
                reference = ReferenceSelection.MaskSmallest(keys, reference, Math.Max(0, more));
                LocalSelection.MaskToTarget(keys, mask, s);
                Assert.True(reference.AsSpan().SequenceEqual(mask.ToBools()), $"seed {seed}, target {s}");
                Assert.Equal(Counts.Target(s, n), mask.CountSet());
            }
        }
    }
}
