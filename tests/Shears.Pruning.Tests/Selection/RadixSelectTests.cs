using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Selection;

public class RadixSelectTests
{
    /// <summary>A row block of a tensor: keys [Start, Start + Length) working on the tensor's mask.</summary>
    private sealed record Piece(int Tensor, int Start, int Length);

    /// <summary>
    /// Runs the distributed protocol as the coordinator and shard grains will: histograms per
    /// piece, merged; tie counts per piece in global order; thresholds applied per piece.
    /// </summary>
    private static GlobalThresholdSearch RunDistributed(uint[][] keys, BitMask[] masks, List<Piece> pieces, long count, bool mergeFirst)
    {
        var search = new GlobalThresholdSearch(count);
        while (!search.IsComplete)
        {
            var histograms = new List<long[]>();
            bool lowBitsZero = true;
            foreach (var p in pieces)
            {
                var h = new long[RadixSelect.Buckets];
                lowBitsZero &= RadixSelect.Histogram(keys[p.Tensor].AsSpan(p.Start, p.Length), masks[p.Tensor], p.Start, search.Level, search.Prefix, h);
                histograms.Add(h);
            }
            if (mergeFirst)
            {
                search.Submit(RadixSelect.MergeHistograms(histograms), lowBitsZero);
            }
            else
            {
                foreach (var h in histograms) search.AddHistogram(h, lowBitsZero);
                search.Submit();
            }
        }

        var ordered = pieces.OrderBy(p => p.Tensor).ThenBy(p => p.Start).ToList();
        var ties = new List<long>();
        long below = 0;
        foreach (var p in ordered)
        {
            RadixSelect.CountLessAndEqual(keys[p.Tensor].AsSpan(p.Start, p.Length), masks[p.Tensor], search.ThresholdKey, out long less, out long equal, p.Start);
            below += less;
            ties.Add(equal);
        }
        if (count > 0)
        {
            Assert.Equal(search.CountBelow, below);
            Assert.Equal(search.CountEqual, ties.Sum());
        }
        long[] take = RadixSelect.AssignTies(ties, search.TiesNeeded);

        long masked = 0;
        // Pieces apply in any order: each one's share is fixed.
        foreach (int i in Enumerable.Range(0, ordered.Count).Reverse())
        {
            var p = ordered[i];
            masked += RadixSelect.ApplyThreshold(keys[p.Tensor].AsSpan(p.Start, p.Length), masks[p.Tensor], search.ThresholdKey, take[i], p.Start);
        }
        Assert.Equal(count, masked);
        return search;
    }

    private static List<Piece> RandomSplit(Random rng, uint[][] keys)
    {
        var pieces = new List<Piece>();
        for (int t = 0; t < keys.Length; t++)
        {
            int start = 0;
            while (start < keys[t].Length)
            {
                int len = rng.Next(3) == 0 ? keys[t].Length - start : rng.Next(1, keys[t].Length - start + 1);
                pieces.Add(new Piece(t, start, len));
                start += len;
            }
        }
        // Shards answer in any order.
        return pieces.OrderBy(_ => rng.Next()).ToList();
    }

    [Fact]
    public void DistributedSelectionIsBitIdenticalToTheReferenceWhateverTheSplit()
    {
        for (int seed = 0; seed < 100; seed++)
        {
            var rng = new Random(seed);
            int tensors = rng.Next(1, 5);
            bool bf16Only = rng.Next(4) == 0;
            var keys = new uint[tensors][];
            var before = new bool[tensors][];
            for (int t = 0; t < tensors; t++)
            {
                int n = rng.Next(1, 400);
                keys[t] = TestWeights.Make(rng, n, bf16Only ? TensorDType.BF16 : TestWeights.AnyDType(rng), $"layer{t}").Keys;
                before[t] = TestWeights.RandomMask(rng, n);
            }
            uint[] allKeys = keys.SelectMany(k => k).ToArray();
            bool[] allBefore = before.SelectMany(m => m).ToArray();
            long unmasked = allBefore.Count(m => !m);
            long count = rng.Next(6) == 0 ? unmasked : rng.NextInt64(unmasked + 1);
            bool[] expected = ReferenceSelection.MaskSmallest(allKeys, allBefore, count);

            for (int split = 0; split < 3; split++)
            {
                var masks = before.Select(m => BitMask.FromBools(m)).ToArray();
                var search = RunDistributed(keys, masks, RandomSplit(rng, keys), count, mergeFirst: split == 0);

                bool[] actual = masks.SelectMany(m => m.ToBools()).ToArray();
                Assert.True(expected.AsSpan().SequenceEqual(actual), $"seed {seed}, split {split}");
                if (bf16Only && count > 0) Assert.True(search.ExactAfterLevel0, $"seed {seed}");
                if (count > 0)
                {
                    uint largest = Enumerable.Range(0, allKeys.Length).Where(i => expected[i] && !allBefore[i]).Max(i => allKeys[i]);
                    Assert.Equal(largest, search.ThresholdKey);
                }
            }
        }
    }

    [Fact]
    public void TiesAcrossTensorsGoToTheEarlierTensorFirst()
    {
        // Two tensors of equal scores; the first in ordinal order gives its ties first.
        uint[][] keys = [[7, 7, 7], [7, 1, 7]];
        var masks = new[] { new BitMask(3), new BitMask(3) };
        var pieces = new List<Piece> { new(1, 0, 3), new(0, 2, 1), new(0, 0, 2) };

        var search = RunDistributed(keys, masks, pieces, 3, mergeFirst: true);

        Assert.Equal(7u, search.ThresholdKey);
        Assert.Equal(1, search.CountBelow);
        Assert.Equal(2, search.TiesNeeded);
        Assert.Equal([true, true, false], masks[0].ToBools());
        Assert.Equal([false, true, false], masks[1].ToBools());
    }

    [Fact]
    public void LevelZeroOnlyForKeysWithZeroLowBits()
    {
        uint[] bf16 = [0x3F80_0000, 0x4000_0000, 0x3F80_0000];
        uint[] fp32 = [0x3F80_0001, 0x4000_0000];
        var h = new long[RadixSelect.Buckets];
        Assert.True(RadixSelect.Histogram(bf16, new BitMask(3), 0, 0, 0, h));
        Assert.Equal(2, h[0x3F80]);
        Assert.False(RadixSelect.Histogram(fp32, new BitMask(2), 0, 0, 0, h));
        Assert.Equal(3, h[0x3F80]); // histograms add up

        var search = new GlobalThresholdSearch(2);
        search.Submit(h, lowBitsZero: false);
        Assert.False(search.IsComplete);
        Assert.Equal(1, search.Level);
        Assert.Equal(0x3F80u, search.Prefix);
    }

    [Fact]
    public void HistogramSkipsMaskedKeysAndReadsAnUnalignedMaskSlice()
    {
        var rng = new Random(5);
        var keys = Enumerable.Range(0, 300).Select(_ => (uint)rng.Next(4) << 16 | (uint)rng.Next(3)).ToArray();
        var mask = BitMask.FromBools(Enumerable.Range(0, 400).Select(_ => rng.Next(3) == 0).ToArray());
        const int offset = 77;

        var top = new long[RadixSelect.Buckets];
        var low = new long[RadixSelect.Buckets];
        RadixSelect.Histogram(keys, mask, offset, 0, 0, top);
        RadixSelect.Histogram(keys, mask, offset, 1, 2, low);

        for (uint b = 0; b < 4; b++)
            Assert.Equal(Enumerable.Range(0, 300).Count(i => !mask[offset + i] && keys[i] >> 16 == b), top[b]);
        for (uint d = 0; d < 3; d++)
            Assert.Equal(Enumerable.Range(0, 300).Count(i => !mask[offset + i] && keys[i] == (2u << 16 | d)), low[d]);
        Assert.Equal(Enumerable.Range(0, 300).Count(i => !mask[offset + i]), top.Sum());
    }

    [Fact]
    public void HistogramChecksItsArguments()
    {
        var h = new long[RadixSelect.Buckets];
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.Histogram([1, 2], new BitMask(2), 1, 0, 0, h));
        Assert.Throws<ArgumentException>(() => RadixSelect.Histogram([1, 2], new BitMask(2), 0, 0, 0, new long[10]));
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.Histogram([1, 2], new BitMask(2), 0, 2, 0, h));
    }

    [Fact]
    public void NothingToMaskIsCompleteAtOnce()
    {
        var search = new GlobalThresholdSearch(0);
        Assert.True(search.IsComplete);
        Assert.Equal(0u, search.ThresholdKey);
        Assert.Equal(0, search.TiesNeeded);
        var mask = new BitMask(3);
        Assert.Equal(0, RadixSelect.ApplyThreshold([0, 0, 5], mask, search.ThresholdKey, search.TiesNeeded));
        Assert.Equal(0, mask.CountSet());
    }

    [Fact]
    public void MaskingEveryUnmaskedKeyTakesTheLargest()
    {
        uint[][] keys = [[3, 0x7F80_0000, 3], [0, 0x7F80_0000]];
        var masks = new[] { BitMask.FromBools([false, false, true]), new BitMask(2) };
        var search = RunDistributed(keys, masks, [new(0, 0, 3), new(1, 0, 2)], 4, mergeFirst: true);
        Assert.Equal(0x7F80_0000u, search.ThresholdKey);
        Assert.Equal(4, search.TotalUnmasked);
        Assert.All(masks, m => Assert.Equal(m.Length, m.CountSet()));
    }

    [Fact]
    public void AskingForMoreThanIsUnmaskedFails()
    {
        var h = new long[RadixSelect.Buckets];
        RadixSelect.Histogram([1, 2, 3], BitMask.FromBools([false, true, false]), 0, 0, 0, h);
        var search = new GlobalThresholdSearch(3);
        var e = Assert.Throws<InvalidOperationException>(() => search.Submit(h));
        Assert.Contains("only 2", e.Message);
    }

    [Fact]
    public void ShardsThatChangeBetweenLevelsAreCaught()
    {
        var h0 = new long[RadixSelect.Buckets];
        h0[1] = 5;
        var search = new GlobalThresholdSearch(2);
        search.Submit(h0);
        var h1 = new long[RadixSelect.Buckets];
        h1[9] = 4;
        Assert.Throws<InvalidOperationException>(() => search.Submit(h1));
    }

    [Fact]
    public void AssignTiesTakesFromTheFirstPiecesFirst()
    {
        Assert.Equal([3L, 0, 1, 0], RadixSelect.AssignTies([3, 0, 5, 2], 4));
        Assert.Equal([0L, 0], RadixSelect.AssignTies([1, 1], 0));
        Assert.Equal([1L, 1], RadixSelect.AssignTies([1, 1], 2));
        Assert.Throws<InvalidOperationException>(() => RadixSelect.AssignTies([1, 1], 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.AssignTies([1, -1], 1));
    }

    [Fact]
    public void MergeHistogramsSumsBuckets()
    {
        var a = new long[RadixSelect.Buckets];
        var b = new long[RadixSelect.Buckets];
        a[0] = 2; a[65535] = 1; b[0] = 3;
        var merged = RadixSelect.MergeHistograms([a, b]);
        Assert.Equal(5, merged[0]);
        Assert.Equal(1, merged[65535]);
        Assert.Equal(6, merged.Sum());
        Assert.Equal(0, RadixSelect.MergeHistograms([]).Sum());
        Assert.Throws<ArgumentException>(() => RadixSelect.MergeHistograms([new long[3]]));
    }

    [Fact]
    public void CountLessAndEqualSkipsMaskedKeys()
    {
        var mask = BitMask.FromBools([false, true, false, false, true, false]);
        RadixSelect.CountLessAndEqual([1, 1, 2, 3, 2, 2], mask, 2, out long less, out long equal);
        Assert.Equal(1, less);
        Assert.Equal(2, equal);
    }

    [Fact]
    public void ApplyThresholdWithTooFewTiesChangesNothing()
    {
        var mask = BitMask.FromBools([false, true, false, false]);
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThreshold([1, 2, 2, 3], mask, 2, 2));
        Assert.Equal([false, true, false, false], mask.ToBools());

        Assert.Equal(2, RadixSelect.ApplyThreshold([1, 2, 2, 3], mask, 2, 1));
        Assert.Equal([true, true, true, false], mask.ToBools());
    }

    [Fact]
    public void ApplyThresholdMatchesItsDefinitionOnAnyKeys()
    {
        uint[] levels = [0, 1, 0x7F80_0000, 0xFFFF_0000, uint.MaxValue - 1, uint.MaxValue];
        for (int seed = 0; seed < 200; seed++)
        {
            var rng = new Random(seed);
            int n = rng.Next(1, 300), offset = rng.Next(0, 130);
            var keys = Enumerable.Range(0, n).Select(_ => levels[rng.Next(levels.Length)]).ToArray();
            var before = TestWeights.RandomMask(rng, offset + n + rng.Next(0, 70));
            uint threshold = levels[rng.Next(levels.Length)];
            var tieAt = Enumerable.Range(0, n).Where(i => keys[i] == threshold && !before[offset + i]).ToList();
            long ties = rng.NextInt64(tieAt.Count + 1);

            var expected = (bool[])before.Clone();
            for (int i = 0; i < n; i++)
                if (!before[offset + i] && (keys[i] < threshold || (keys[i] == threshold && tieAt.IndexOf(i) < ties))) expected[offset + i] = true;
            var mask = BitMask.FromBools(before);
            RadixSelect.CountLessAndEqual(keys, mask, threshold, out long less, out long equal, offset);
            long masked = RadixSelect.ApplyThreshold(keys, mask, threshold, ties, offset);

            Assert.True(expected.AsSpan().SequenceEqual(mask.ToBools()), $"seed {seed}");
            Assert.Equal(tieAt.Count, equal);
            Assert.Equal(less + ties, masked);
        }
    }
}
