using Shears.Pruning.Masks;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Selection;

/// <summary>
/// The chunked (<see cref="KeyFiller"/>) forms of the shard-side selection steps give exactly what the in-memory forms
/// give, on keys that span several chunks, with ties, masked elements and an unaligned mask slice.
/// </summary>
public class ChunkedSelectionTests
{
    private static (uint[] Keys, BitMask Mask) Data(int seed, long count, long maskLength, long maskOffset)
    {
        var random = new Random(seed);
        // Few distinct keys: ties everywhere, in the top and the low 16 bits.
        var keys = new uint[count];
        for (long i = 0; i < count; i++) keys[i] = (uint)random.Next(40) << 16 | (uint)random.Next(3);
        var mask = new BitMask(maskLength);
        for (long i = 0; i < maskLength; i++) if (random.Next(5) == 0) mask.Set(i);
        return (keys, mask);
    }

    private static KeyFiller Filler(uint[] keys, List<long>? starts = null) => (start, span) =>
    {
        starts?.Add(start);
        keys.AsSpan((int)start, span.Length).CopyTo(span);
    };

    [Theory]
    [InlineData(1, 3 * RadixSelect.ChunkKeys + 17, 0)]
    [InlineData(2, RadixSelect.ChunkKeys, 5)]
    [InlineData(3, 100, 13)]
    public void HistogramsAndCountsEqualTheInMemoryOnes(int seed, int count, int offset)
    {
        var (keys, mask) = Data(seed, count, count + offset + 7, offset);
        var starts = new List<long>();
        for (int level = 0; level < 2; level++)
        {
            var expected = new long[RadixSelect.Buckets];
            var actual = new long[RadixSelect.Buckets];
            bool a = RadixSelect.Histogram(keys, mask, offset, level, 7, expected);
            bool b = RadixSelect.Histogram(count, Filler(keys, starts), mask, offset, level, 7, actual);
            Assert.Equal(a, b);
            Assert.Equal(expected, actual);
        }
        Assert.Equal(Enumerable.Range(0, (count + RadixSelect.ChunkKeys - 1) / RadixSelect.ChunkKeys).Select(c => (long)c * RadixSelect.ChunkKeys), starts.Distinct());

        uint threshold = 20u << 16 | 1;
        RadixSelect.CountLessAndEqual(keys, mask, threshold, out long less, out long equal, offset);
        RadixSelect.CountLessAndEqual(count, Filler(keys), mask, threshold, out long less2, out long equal2, offset);
        Assert.Equal((less, equal), (less2, equal2));
        Assert.True(equal > 0 && less > 0);
    }

    [Theory]
    [InlineData(4, 3 * RadixSelect.ChunkKeys + 17, 0)]
    [InlineData(5, 2 * RadixSelect.ChunkKeys + 1, 3)]
    public void ApplyThresholdTakesTheSameTiesInIndexOrder(int seed, int count, int offset)
    {
        var (keys, mask) = Data(seed, count, count + offset, offset);
        uint threshold = 11u << 16 | 2;
        RadixSelect.CountLessAndEqual(keys, mask, threshold, out _, out long equal, offset);
        foreach (long ties in new[] { 0, 1, equal / 3, equal - 1, equal })
        {
            var expected = mask.Clone();
            var actual = mask.Clone();
            long a = RadixSelect.ApplyThreshold(keys, expected, threshold, ties, offset);
            long b = RadixSelect.ApplyThreshold(count, Filler(keys), actual, threshold, ties, offset);
            Assert.Equal(a, b);
            Assert.True(expected.SequenceEqual(actual), $"ties {ties}");
        }

        var unchanged = mask.Clone();
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThreshold(count, Filler(keys), unchanged, threshold, equal + 1, offset));
        Assert.True(mask.SequenceEqual(unchanged));
    }

    [Fact]
    public void LocalSelectionMasksTheSameElements()
    {
        int count = 2 * RadixSelect.ChunkKeys + 999;
        var (keys, mask) = Data(6, count, count, 0);
        long unmasked = count - mask.CountSet();
        foreach (long take in new[] { 0, 1, unmasked / 2, unmasked })
        {
            var expected = mask.Clone();
            var actual = mask.Clone();
            var a = LocalSelection.MaskSmallest(keys, expected, take);
            var b = LocalSelection.MaskSmallest(Filler(keys), actual, take);
            Assert.Equal(a, b);
            Assert.True(expected.SequenceEqual(actual), $"take {take}");
            Assert.Equal(mask.CountSet() + take, actual.CountSet());
        }
    }
}
