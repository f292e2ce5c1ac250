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
            long a = RadixSelect.ApplyThreshold(keys, expected, threshold, ties, offset);
            // With the tie count unknown (a checking pass), and known (none; taking them all needs no counting).
            foreach (long known in new[] { -1, equal })
            {
                var actual = mask.Clone();
                long b = RadixSelect.ApplyThreshold(count, Filler(keys), actual, threshold, ties, offset, known);
                Assert.Equal(a, b);
                Assert.True(expected.SequenceEqual(actual), $"ties {ties}, known {known}");
            }
        }

        var unchanged = mask.Clone();
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThreshold(count, Filler(keys), unchanged, threshold, equal + 1, offset));
        Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThreshold(count, Filler(keys), unchanged, threshold, equal + 1, offset, equal));
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
        // Masked elements in the first half; whole blocks of 64 unmasked in the second (the histogram's fast path).
        var mask = new BitMask(count + offset + 3);
        for (int i = 0; i < mask.Length / 2; i++) if (random.Next(4) == 0) mask.Set(i);

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

            // As shards select: histograms and masking both from the weight bits, the search's tie count passed on.
            var bits = mask.Clone();
            long knownEqual = -2;
            var c = LocalSelection.MaskSmallest(Filler(keys), bits, take,
                (level, prefix, into) => RadixSelect.HistogramOfWeights(raw, Shears.Pruning.Checkpoints.TensorDType.F32, bits, 0, level, prefix, into),
                (threshold, ties, equal) =>
                {
                    knownEqual = equal;
                    return RadixSelect.ApplyThresholdToWeights(raw, Shears.Pruning.Checkpoints.TensorDType.F32, bits, threshold, ties, 0, equal);
                });
            Assert.Equal(a, c);
            Assert.True(expected.SequenceEqual(bits), $"take {take}, from weight bits");
            RadixSelect.CountLessAndEqual(keys, mask, a.ThresholdKey, out _, out long equalBefore);
            Assert.Equal(equalBefore, knownEqual);
        }
    }

    /// <summary>Weights with ties (few distinct magnitudes, both signs), specials, and their magnitude keys.</summary>
    private static (byte[] Raw, uint[] Keys) Weights(Shears.Pruning.Checkpoints.TensorDType dtype, int seed, int count)
    {
        var random = new Random(seed);
        float[] special = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 1e-39f];
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = i % 13 == 0 ? special[random.Next(special.Length)] : (random.Next(2) == 0 ? -1 : 1) * random.Next(1, 60) / 64f;
        byte[] raw = dtype == Shears.Pruning.Checkpoints.TensorDType.F32
            ? values.SelectMany(BitConverter.GetBytes).ToArray()
            : values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray();
        var keys = new uint[count];
        Shears.Pruning.Scoring.ScoreKeys.Magnitude(raw, dtype, keys, "w");
        return (raw, keys);
    }

    /// <summary>
    /// Counting and masking at a threshold read straight from fp32 and bf16 weight bits give exactly what the key forms
    /// give: the same counts, the same ties taken in index order, with or without the tie count known, at thresholds
    /// that are keys, between keys (low bits set: no bf16 key equals them), zero and +Inf; too many ties change nothing.
    /// </summary>
    [Theory]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.F32, 0)]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.F32, 11)]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.BF16, 0)]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.BF16, 5)]
    public void ThresholdStepsOnWeightBitsEqualThoseOnTheirKeys(Shears.Pruning.Checkpoints.TensorDType dtype, int offset)
    {
        int count = 5_000 + offset;
        var (raw, keys) = Weights(dtype, 20 + offset, count);
        var random = new Random(offset);
        var mask = new BitMask(count + offset + 2);
        // Masked elements in the first third only: later blocks of 64 are whole.
        for (int i = 0; i < mask.Length / 3; i++) if (random.Next(3) == 0) mask.Set(i);
        uint median = keys.OrderBy(k => k).ElementAt(count / 2);
        foreach (uint threshold in new[] { median, median | 1, median - 1, 0u, keys.Max(), Shears.Pruning.Scoring.ScoreKeys.InfinityKey })
        {
            RadixSelect.CountLessAndEqual(keys, mask, threshold, out long less, out long equal, offset);
            RadixSelect.CountLessAndEqualOfWeights(raw, dtype, mask, threshold, out long less2, out long equal2, offset);
            Assert.Equal((less, equal), (less2, equal2));
            foreach (long ties in new[] { 0, 1, equal / 3, equal - 1, equal }.Where(t => t >= 0 && t <= equal).Distinct())
            {
                var expected = mask.Clone();
                long a = RadixSelect.ApplyThreshold(keys, expected, threshold, ties, offset);
                foreach (long known in new[] { -1, equal })
                {
                    var actual = mask.Clone();
                    long b = RadixSelect.ApplyThresholdToWeights(raw, dtype, actual, threshold, ties, offset, known);
                    Assert.Equal(a, b);
                    Assert.True(expected.SequenceEqual(actual), $"threshold {threshold:X8}, ties {ties}, known {known}");
                }
            }
            var unchanged = mask.Clone();
            Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThresholdToWeights(raw, dtype, unchanged, threshold, equal + 1, offset));
            Assert.Throws<ArgumentOutOfRangeException>(() => RadixSelect.ApplyThresholdToWeights(raw, dtype, unchanged, threshold, equal + 1, offset, equal));
            Assert.True(mask.SequenceEqual(unchanged));
        }
        Assert.Throws<ArgumentException>(() => RadixSelect.ApplyThresholdToWeights(new byte[8], Shears.Pruning.Checkpoints.TensorDType.F16, new BitMask(4), 0, 0));
    }

    /// <summary>A small bf16 case worked by hand: |w| = 0.5, 0.25, 0.5, 1, 0.5 with the first masked.</summary>
    [Fact]
    public void BF16ThresholdByHand()
    {
        // bf16 bits: 0.5 = 0x3F00, -0.25 = 0xBE80, 0.5, -1 = 0xBF80, -0.5 = 0xBF00.
        byte[] raw = new ushort[] { 0x3F00, 0xBE80, 0x3F00, 0xBF80, 0xBF00 }.SelectMany(BitConverter.GetBytes).ToArray();
        var mask = new BitMask(5);
        mask.Set(0);
        uint half = 0x3F00_0000;
        RadixSelect.CountLessAndEqualOfWeights(raw, Shears.Pruning.Checkpoints.TensorDType.BF16, mask, half, out long less, out long equal);
        Assert.Equal((1L, 2L), (less, equal)); // 0.25 below; elements 2 and 4 at 0.5 (0 is masked)
        Assert.Equal(2, RadixSelect.ApplyThresholdToWeights(raw, Shears.Pruning.Checkpoints.TensorDType.BF16, mask, half, 1));
        Assert.Equal([true, true, true, false, false], Enumerable.Range(0, 5).Select(i => mask[i]));
    }

    /// <summary>
    /// The checked histogram equals the plain one on clean weights (±Inf included, which sit in and next to the NaN
    /// buckets), and refuses NaN anywhere with the tensor and element the key computation names.
    /// </summary>
    [Theory]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.F32)]
    [InlineData(Shears.Pruning.Checkpoints.TensorDType.BF16)]
    public void CheckedHistogramRefusesNaNAndOtherwiseCounts(Shears.Pruning.Checkpoints.TensorDType dtype)
    {
        int count = 3_000;
        var (raw, _) = Weights(dtype, 30, count);
        var mask = new BitMask(count);
        var expected = new long[RadixSelect.Buckets];
        var actual = new long[RadixSelect.Buckets];
        bool a = RadixSelect.HistogramOfWeights(raw, dtype, mask, 0, 0, 0, expected);
        bool b = RadixSelect.CheckedHistogramOfWeights(raw, dtype, mask, 0, actual, "w", 0);
        Assert.Equal(expected, actual);
        Assert.Equal(a, b);
        Assert.True(expected[(int)(Shears.Pruning.Scoring.ScoreKeys.InfinityKey >> 16)] > 0);

        int size = dtype == Shears.Pruning.Checkpoints.TensorDType.F32 ? 4 : 2;
        // fp32: a NaN whose top digit is +Inf's (low bits set); a negative quiet one. bf16: both quiet.
        foreach (var (at, nan) in new[] { (17, size == 4 ? 0x7F80_0001u : 0x7FC0u), (2_999, size == 4 ? 0xFFC0_0000u : 0xFFC1u) })
        {
            var bad = (byte[])raw.Clone();
            if (size == 4) BitConverter.TryWriteBytes(bad.AsSpan(at * 4), nan);
            else BitConverter.TryWriteBytes(bad.AsSpan(at * 2), (ushort)nan);
            var e = Assert.Throws<Shears.Pruning.Scoring.NaNWeightException>(() =>
                RadixSelect.CheckedHistogramOfWeights(bad, dtype, mask, 0, new long[RadixSelect.Buckets], "layers.0.w", 500));
            Assert.Equal(("layers.0.w", 500L + at), (e.TensorName, e.Index));
        }
    }
}
