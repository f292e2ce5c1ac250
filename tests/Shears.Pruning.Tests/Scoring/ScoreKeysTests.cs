using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;

namespace Shears.Pruning.Tests.Scoring;

public class ScoreKeysTests
{
    private static byte[] F32(params float[] w) => w.SelectMany(BitConverter.GetBytes).ToArray();
    private static byte[] U16(params ushort[] bits) => bits.SelectMany(BitConverter.GetBytes).ToArray();

    private static uint[] Magnitude(byte[] raw, TensorDType dtype, string name = "w")
    {
        var keys = new uint[raw.Length / dtype.ElementSize()];
        ScoreKeys.Magnitude(raw, dtype, keys, name);
        return keys;
    }

    [Fact]
    public void F32KeysAreTheBitsOfTheAbsoluteValue()
    {
        var keys = Magnitude(F32(1.5f, -1.5f, 0f, -0f, float.PositiveInfinity, float.NegativeInfinity, -float.Epsilon, -2f), TensorDType.F32);
        Assert.Equal([0x3FC0_0000u, 0x3FC0_0000, 0, 0, 0x7F80_0000, 0x7F80_0000, 1, 0x4000_0000], keys);
        Assert.Equal(1.5f, ScoreKeys.ToScore(keys[0]));
    }

    [Fact]
    public void BF16KeysAreTheWidenedAbsoluteValue()
    {
        // 1.5, -1.5, -0, -Inf, smallest subnormal, -3.0
        var keys = Magnitude(U16(0x3FC0, 0xBFC0, 0x8000, 0xFF80, 0x0001, 0xC040), TensorDType.BF16);
        Assert.Equal([0x3FC0_0000u, 0x3FC0_0000, 0, 0x7F80_0000, 0x0001_0000, 0x4040_0000], keys);
        Assert.Equal(3f, ScoreKeys.ToScore(keys[5]));
    }

    [Fact]
    public void BF16KeysOfEveryBitPatternAreTheFp32BitsOfTheAbsoluteValue()
    {
        // Every non-NaN pattern, shuffled, in a length that ends off the vector width: vector and scalar paths agree
        // with the definition (the fp32 bits of |w|, widened exactly).
        var patterns = Enumerable.Range(0, 1 << 16).Select(b => (ushort)b)
            .Where(b => !float.IsNaN(BitConverter.UInt32BitsToSingle((uint)b << 16))).OrderBy(b => (b * 7919) % 65521).ToArray();
        var keys = Magnitude(U16(patterns), TensorDType.BF16);
        for (int i = 0; i < patterns.Length; i++)
            Assert.Equal(BitConverter.SingleToUInt32Bits(Math.Abs(BitConverter.UInt32BitsToSingle((uint)patterns[i] << 16))), keys[i]);
    }

    [Fact]
    public void BF16NaNInTheVectorisedPartIsFoundFirst()
    {
        var bits = new ushort[100];
        bits[3] = 0x7FC1;
        bits[70] = 0xFFC0;
        var e = Assert.Throws<NaNWeightException>(() => ScoreKeys.Magnitude(U16(bits), TensorDType.BF16, new uint[100], "w"));
        Assert.Equal(3, e.Index);
    }

    [Fact]
    public void F16KeysAreTheExactFp32AbsoluteValue()
    {
        Half[] values = [(Half)1.5f, (Half)(-0.1f), Half.NegativeZero, Half.NegativeInfinity, -Half.Epsilon, Half.MaxValue];
        var keys = Magnitude(U16(values.Select(BitConverter.HalfToUInt16Bits).ToArray()), TensorDType.F16);
        for (int i = 0; i < values.Length; i++)
            Assert.Equal(BitConverter.SingleToUInt32Bits(Math.Abs((float)values[i])), keys[i]);
        Assert.Equal(ScoreKeys.InfinityKey, keys[3]);
        Assert.Equal(0u, keys[2]);
    }

    [Fact]
    public void KeyOrderIsMagnitudeOrder()
    {
        var rng = new Random(11);
        var w = Enumerable.Range(0, 2000).Select(i => i % 7 == 0 ? (float)(rng.NextDouble() * 1e-40) : (float)(rng.NextDouble() * 200 - 100)).ToArray();
        var keys = Magnitude(F32(w), TensorDType.F32);
        for (int i = 1; i < w.Length; i++)
            Assert.Equal(Math.Abs(w[i - 1]).CompareTo(Math.Abs(w[i])), keys[i - 1].CompareTo(keys[i]));
    }

    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.BF16)]
    [InlineData(TensorDType.F16)]
    public void NaNNamesTheTensorAndTheElement(TensorDType dtype)
    {
        // 37 elements: the NaN sits past the vectorised part for F32; a negative NaN to be sure.
        var w = Enumerable.Range(0, 37).Select(i => (float)i).ToArray();
        w[33] = -float.NaN;
        byte[] raw = dtype switch
        {
            TensorDType.F32 => F32(w),
            TensorDType.BF16 => U16(w.Select(x => (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16)).ToArray()),
            _ => U16(w.Select(x => BitConverter.HalfToUInt16Bits((Half)x)).ToArray()),
        };
        var keys = new uint[37];

        var e = Assert.Throws<NaNWeightException>(() => ScoreKeys.Magnitude(raw, dtype, keys, "model.layers.3.mlp.up_proj.weight", 1000));

        Assert.Equal("model.layers.3.mlp.up_proj.weight", e.TensorName);
        Assert.Equal(1033, e.Index);
        Assert.Equal("tensor 'model.layers.3.mlp.up_proj.weight' holds NaN at element 1033", e.Message);
    }

    [Fact]
    public void NaNInTheVectorisedPartIsFoundFirst()
    {
        var w = new float[64];
        w[5] = float.NaN;
        w[50] = float.NaN;
        var e = Assert.Throws<NaNWeightException>(() => ScoreKeys.Magnitude(F32(w), TensorDType.F32, new uint[64], "w"));
        Assert.Equal(5, e.Index);
    }

    [Fact]
    public void UnsupportedDTypeAndWrongLengthAreRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => ScoreKeys.Magnitude(new byte[8], TensorDType.I32, new uint[2], "ids"));
        Assert.Contains("ids", e.Message);
        Assert.Throws<ArgumentException>(() => ScoreKeys.Magnitude(new byte[6], TensorDType.F32, new uint[2], "w"));
    }

    [Fact]
    public void RandomKeysAreTheSameWhateverTheSplit()
    {
        var whole = new uint[1000];
        ScoreKeys.Random(42, "model.layers.0.self_attn.q_proj.weight", 0, whole);

        var rng = new Random(1);
        for (int trial = 0; trial < 20; trial++)
        {
            var pieces = new uint[1000];
            int start = 0;
            while (start < 1000)
            {
                int len = rng.Next(1, 1000 - start + 1);
                ScoreKeys.Random(42, "model.layers.0.self_attn.q_proj.weight", start, pieces.AsSpan(start, len));
                start += len;
            }
            Assert.Equal(whole, pieces);
        }
    }

    [Fact]
    public void RandomKeysAreUniformInZeroToOneAndDependOnSeedAndTensor()
    {
        var a = new uint[4096];
        var b = new uint[4096];
        var c = new uint[4096];
        ScoreKeys.Random(1, "w", 0, a);
        ScoreKeys.Random(2, "w", 0, b);
        ScoreKeys.Random(1, "v", 0, c);

        Assert.All(a, k => Assert.InRange(ScoreKeys.ToScore(k), 0f, 0.99999995f));
        Assert.InRange(a.Average(k => ScoreKeys.ToScore(k)), 0.47, 0.53);
        Assert.True(a.Zip(b).Count(p => p.First == p.Second) < 10);
        Assert.True(a.Zip(c).Count(p => p.First == p.Second) < 10);
        Assert.True(a.Distinct().Count() > 4000);
    }

    [Fact]
    public void Fnv1aAndSplitMixMatchTheirPublishedValues()
    {
        Assert.Equal(0xCBF2_9CE4_8422_2325UL, ScoreKeys.Fnv1a64(""));
        Assert.Equal(0xAF63_DC4C_8601_EC8CUL, ScoreKeys.Fnv1a64("a"));
        // First output of SplitMix64 seeded with 0 (Vigna's reference implementation).
        Assert.Equal(0xE220_A839_7B1D_CDAFUL, ScoreKeys.SplitMix64(0));
    }

    /// <summary>
    /// The key-free NaN check finds the same first NaN as the key computation, for every dtype, at the start, in a vector
    /// block, in the scalar tail and after the first check block; ±Inf and the largest finite values pass; an offset
    /// names the element in the whole tensor.
    /// </summary>
    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.F16)]
    [InlineData(TensorDType.BF16)]
    public void CheckNoNaNFindsTheFirstNaNAsTheKeysDo(TensorDType dtype)
    {
        int count = 9_001;
        var random = new Random((int)dtype);
        int size = dtype.ElementSize();
        ushort inf16 = dtype == TensorDType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00;
        byte[] Clean()
        {
            var raw = new byte[count * size];
            for (int i = 0; i < count; i++)
            {
                // Finite values, ±Inf and the largest finite patterns: none is NaN.
                uint bits = size == 4
                    ? (uint)random.Next(3) switch { 0 => 0x7F80_0000u, 1 => 0x7F7F_FFFFu, _ => (uint)random.Next(0x7F80_0000) } | (uint)random.Next(2) << 31
                    : (uint)(random.Next(3) switch { 0 => inf16, 1 => inf16 - 1, _ => random.Next(inf16) } | random.Next(2) << 15);
                if (size == 4) BitConverter.TryWriteBytes(raw.AsSpan(i * 4), bits);
                else BitConverter.TryWriteBytes(raw.AsSpan(i * 2), (ushort)bits);
            }
            return raw;
        }
        ScoreKeys.CheckNoNaN(Clean(), dtype, "w");
        foreach (int at in new[] { 0, 17, 4095, 4096, 8200, count - 1 })
        {
            var raw = Clean();
            // A quiet NaN at `at`, a negative signalling one later.
            if (size == 4) { BitConverter.TryWriteBytes(raw.AsSpan(at * 4), 0x7FC0_0000u); BitConverter.TryWriteBytes(raw.AsSpan(Math.Min(count - 1, at + 3) * 4), 0xFF80_0001u); }
            else { BitConverter.TryWriteBytes(raw.AsSpan(at * 2), (ushort)(inf16 + 0x40)); BitConverter.TryWriteBytes(raw.AsSpan(Math.Min(count - 1, at + 3) * 2), (ushort)(0x8000 | inf16 + 1)); }
            var fromKeys = Assert.Throws<NaNWeightException>(() => Magnitude(raw, dtype, "layer.w"));
            var e = Assert.Throws<NaNWeightException>(() => ScoreKeys.CheckNoNaN(raw, dtype, "layer.w", 1000));
            Assert.Equal(at, fromKeys.Index);
            Assert.Equal(1000 + at, e.Index);
            Assert.Equal("layer.w", e.TensorName);
        }
        Assert.Throws<ArgumentException>(() => ScoreKeys.CheckNoNaN(new byte[3], dtype == TensorDType.F32 ? TensorDType.F32 : TensorDType.BF16, "w"));
        Assert.Throws<ArgumentException>(() => ScoreKeys.CheckNoNaN(new byte[4], TensorDType.I32, "w"));
    }
}
