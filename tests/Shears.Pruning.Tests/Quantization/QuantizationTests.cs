using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Tests.Quantization;

public class PackedIntTests
{
    [Fact]
    public void EightBitValuesPackAsTheFormatsOwnExample()
    {
        // pack_to_int32's documented example: int8 [1, 2] → unsigned [129, 130] → 0x00008281 = 33409.
        var words = new int[1];
        PackedInt.PackRow([1, 2], 8, words);
        Assert.Equal(33409, words[0]);
    }

    [Fact]
    public void FourBitValuesPackLowestColumnInLowestNibble()
    {
        var words = new int[2];
        PackedInt.PackRow([-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7], 4, words);
        Assert.Equal(0x76543210, words[0]);
        Assert.Equal(unchecked((int)0xFEDCBA98), words[1]);
        // A short last word is padded with zero fields: [7, -8, 0] → fields 15, 0, 8.
        var padded = new int[1];
        PackedInt.PackRow([7, -8, 0], 4, padded);
        Assert.Equal(0x80F, padded[0]);
    }

    [Fact]
    public void ZeroPointsPackAlongRows()
    {
        // [9 rows, 2 columns] of 4-bit values: word (0, c) holds rows 0..7 of column c, word (1, c) row 8.
        sbyte[] values = new sbyte[18];
        for (int r = 0; r < 9; r++) { values[r * 2] = (sbyte)(r - 8 + (r == 8 ? 1 : 0)); values[r * 2 + 1] = 0; }
        var words = new int[4];
        PackedInt.PackColumns(values, 9, 2, 4, words);
        Assert.Equal(0x76543210, words[0]);
        Assert.Equal(unchecked((int)0x88888888), words[1]);
        Assert.Equal(9, words[2]);   // row 8, column 0: value 1 → field 9
        Assert.Equal(8, words[3]);   // row 8, column 1: value 0 → field 8
        var back = new sbyte[18];
        PackedInt.UnpackColumns(words, 9, 2, 4, back);
        Assert.Equal(values, back);
    }

    [Theory]
    [InlineData(4, 37)]
    [InlineData(8, 13)]
    [InlineData(2, 5)]
    public void RandomRowsRoundTrip(int bits, int length)
    {
        var random = new Random(bits * 100 + length);
        var values = Enumerable.Range(0, length).Select(_ => (sbyte)random.Next(-(1 << (bits - 1)), 1 << (bits - 1))).ToArray();
        var words = new int[PackedInt.Words(length, bits)];
        PackedInt.PackRow(values, bits, words);
        var back = new sbyte[length];
        PackedInt.UnpackRow(words, bits, back);
        Assert.Equal(values, back);
    }
}

public class GroupQuantizerTests
{
    private static float Bf16(float x) => GroupQuantizer.Round(x, TensorDType.BF16);

    [Fact]
    public void SymmetricFourBitHandWorked()
    {
        // absmax 1.5: scale 1.5 / 7.5 = 0.2, which bf16 holds as 0.2001953125 (0x3E4D).
        var scheme = QuantScheme.Parse("W4A16", 4);
        var q = new sbyte[4];
        var groups = new QuantParams[1];
        GroupQuantizer.QuantizeRow([0.75f, -1.5f, 0f, Bf16(0.3f)], scheme, TensorDType.BF16, q, groups);
        Assert.Equal(0.2001953125f, groups[0].Scale);
        Assert.Equal(0, groups[0].ZeroPoint);
        Assert.Equal(new sbyte[] { 4, -7, 0, 2 }, q); // 3.746 → 4, −7.49 → −7, 0, bf16 0.3 = 0.30078125: 1.502 → 2
        Assert.Equal(0.80078125f, GroupQuantizer.Dequantize(4, groups[0], TensorDType.BF16));
    }

    [Fact]
    public void AsymmetricFourBitHandWorked()
    {
        // min −1, max 2: scale 3/15 = 0.2 → 0.2001953125; min/scale = −4.995 → bf16 −5.0; zp = −8 − (−5) = −3.
        var scheme = QuantScheme.Parse("W4A16_ASYM", 4);
        var q = new sbyte[4];
        var groups = new QuantParams[1];
        GroupQuantizer.QuantizeRow([-1f, 0f, 2f, 0.5f], scheme, TensorDType.BF16, q, groups);
        Assert.Equal(new QuantParams(0.2001953125f, -3), groups[0]);
        Assert.Equal(new sbyte[] { -8, -3, 7, -1 }, q); // −7.995 → −8, 0 → zp, 6.99 → 7, −0.502 → −1
        Assert.Equal(0f, GroupQuantizer.Dequantize(-3, groups[0], TensorDType.BF16));
    }

    [Fact]
    public void AZeroGroupGetsTheDtypesEpsilonAndStaysZero()
    {
        foreach (var name in new[] { "W4A16", "W4A16_ASYM", "W8A16" })
        {
            var scheme = QuantScheme.Parse(name, 4);
            var q = new sbyte[4];
            var groups = new QuantParams[scheme.PerChannel ? 1 : 1];
            GroupQuantizer.QuantizeRow([0f, 0f, 0f, 0f], scheme, TensorDType.BF16, q, groups);
            Assert.Equal(MathF.Pow(2, -7), groups[0].Scale);
            Assert.All(q, v => Assert.Equal(0f, GroupQuantizer.Dequantize(v, groups[0], TensorDType.BF16)));
        }
    }

    [Theory]
    [InlineData("W4A16", TensorDType.BF16)]
    [InlineData("W4A16_ASYM", TensorDType.BF16)]
    [InlineData("W8A16", TensorDType.F16)]
    [InlineData("W4A16_ASYM", TensorDType.F32)]
    public void RandomWeightsWithTiesStayWithinHalfAStepAndZerosStayZero(string name, TensorDType dtype)
    {
        var scheme = QuantScheme.Parse(name, 16);
        var random = new Random(name.Length * 7 + (int)dtype);
        int rows = 12, columns = 40; // two full groups and a short one
        var weights = new float[rows * columns];
        for (int i = 0; i < weights.Length; i++)
            weights[i] = random.Next(4) == 0 ? 0f : GroupQuantizer.Round(random.Next(3) == 0 ? 0.25f * random.Next(-4, 5) : (float)(random.NextDouble() * 2 - 1), dtype);
        var raw = new byte[weights.Length * dtype.ElementSize()];
        FloatBits.Store(weights, dtype, raw);
        var result = QuantizedRows.RoundToNearest(raw, dtype, rows, columns, scheme, "t");
        var dequantized = QuantizedRows.Widen(result.DequantizedBytes(), dtype, weights.Length, "t");
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                int i = r * columns + c;
                var p = result.Group(r, (int)(c / scheme.GroupWidth(columns)));
                int q = result.Value(r, c);
                // The reference: q from the definition, in double.
                double exact = Math.Clamp(Math.Round(weights[i] / (double)p.Scale + p.ZeroPoint, MidpointRounding.ToEven), scheme.QMin, scheme.QMax);
                Assert.True(Math.Abs(exact - q) <= (Math.Abs(weights[i] / (double)p.Scale + p.ZeroPoint - Math.Floor(weights[i] / (double)p.Scale + p.ZeroPoint) - 0.5) < 1e-5 ? 1 : 0),
                    $"({r}, {c}): q {q}, reference {exact}");
                if (weights[i] == 0) Assert.Equal(0f, dequantized[i]);
                else if (q > scheme.QMin && q < scheme.QMax)
                    Assert.True(Math.Abs((q - p.ZeroPoint) * (double)p.Scale - weights[i]) <= 0.5 * p.Scale * (1 + 1e-6), $"({r}, {c}) {weights[i]} → {q}");
            }
        Assert.True(result.MaxAbsError > 0);
        Assert.True(result.AbsErrorSum / weights.Length <= result.MaxAbsError);
    }

    [Fact]
    public void SchemesAreLlmCompressorsPresets()
    {
        Assert.Equal((8, true, 0, false), Tuple(QuantScheme.Parse("W8A16", 64)));
        Assert.Equal((4, true, 64, false), Tuple(QuantScheme.Parse("W4A16", 64)));
        Assert.Equal((4, false, 128, false), Tuple(QuantScheme.Parse("W4A16_ASYM")));
        Assert.Equal((8, true, 0, true), Tuple(QuantScheme.Parse("W8A8")));
        Assert.Contains("--quantize", Assert.Throws<ArgumentException>(() => QuantScheme.Parse("W3A16")).Message);
        Assert.Contains("--group-size", Assert.Throws<ArgumentException>(() => QuantScheme.Parse("W4A16", 0)).Message);
        static (int, bool, int, bool) Tuple(QuantScheme s) => (s.Bits, s.Symmetric, s.GroupSize, s.DynamicActivations);
    }
}
