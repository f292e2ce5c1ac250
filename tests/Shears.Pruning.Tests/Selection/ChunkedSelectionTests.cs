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

    /// <summary>
    /// Histograms read straight from fp32 and bf16 weight bits equal those of the magnitude keys, both levels, with
    /// signs, ±0, ±Inf, subnormals, masked elements and an unaligned mask slice.
    /// </summary>
    [Theory]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.F32)]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.BF16)]
    public void HistogramsOfWeightBitsEqualThoseOfTheirKeys(Shears.Pruning.Checkpoints.TensorDType dtype)
    {
        var random = new Random((int)dtype);
        int count = 70_000, offset = 9;
        var values = new float[count];
        float[] special = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 1e-39f, -3.5f];
        for (int i = 0; i < count; i++)
            values[i] = i % 11 == 0 ? special[random.Next(special.Length)] : (float)(random.NextDouble() * 2 - 1) * (random.Next(3) == 0 ? 1e-3f : 1f);
        byte[] raw = dtype == Shears.Pruning.Checkpoints.TensorDType.F32
            ? values.SelectMany(BitConverter.GetBytes).ToArray()
            : values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray();
        var keys = new uint[count];
        Shears.Pruning.Scoring.ScoreKeys.Magnitude(raw, dtype, keys, "w");
        var mask = new BitMask(count + offset + 3);
        for (int i = 0; i < mask.Length; i++) if (random.Next(4) == 0) mask.Set(i);

        foreach (var (level, prefix) in new[] { (0, 0u), (1, keys[5] >> 16), (1, keys[12345] >> 16) })
        {
            var expected = new long[RadixSelect.Buckets];
            var actual = new long[RadixSelect.Buckets];
            bool a = RadixSelect.Histogram(keys, mask, offset, level, prefix, expected);
            bool b = RadixSelect.HistogramOfWeights(raw, dtype, mask, offset, level, prefix, actual);
            Assert.Equal(a, b);
            Assert.Equal(expected, actual);
            Assert.True(actual.Sum() > 0);
        }
        Assert.Throws<ArgumentException>(() => RadixSelect.HistogramOfWeights(new byte[8], Shears.Pruning.Checkpoints.TensorDType.F16, new BitMask(4), 0, 0, 0, new long[RadixSelect.Buckets]));
    }

    [Fact]
    public void LocalSelectionWithHistogramsFromWeightBitsMasksTheSameElements()
    {
        var random = new Random(8);
        int count = 2 * RadixSelect.ChunkKeys + 321;
        // Few distinct magnitudes, both signs: ties across the sign bit.
        var values = Enumerable.Range(0, count).Select(_ => (random.Next(2) == 0 ? -1 : 1) * random.Next(50) / 64f).ToArray();
        var raw = values.SelectMany(BitConverter.GetBytes).ToArray();
        var keys = new uint[count];
        Shears.Pruning.Scoring.ScoreKeys.Magnitude(raw, Shears.Pruning.Checkpoints.TensorDType.F32, keys, "w");
        var (_, mask) = Data(9, count, count, 0);
        foreach (long take in new[] { 1L, (count - mask.CountSet()) / 3 })
        {
            var expected = mask.Clone();
            var actual = mask.Clone();
            var a = LocalSelection.MaskSmallest(keys, expected, take);
            var b = LocalSelection.MaskSmallest(Filler(keys), actual, take,
                (level, prefix, into) => RadixSelect.HistogramOfWeights(raw, Shears.Pruning.Checkpoints.TensorDType.F32, actual, 0, level, prefix, into));
            Assert.Equal(a, b);
            Assert.True(expected.SequenceEqual(actual), $"take {take}");
        }
    }
}
