using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using TorchSharp;
using static Shears.Pruning.Tests.Calibration.CalibrationData;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Calibration;

public class NmPatternTests
{
    [Theory]
    [InlineData("2:4", 2, 4)]
    [InlineData(" 4:8 ", 4, 8)]
    [InlineData("1:4", 1, 4)]
    [InlineData("15:16", 15, 16)]
    public void ParsesNColonM(string text, int n, int m)
    {
        var pattern = NmPattern.Parse(text);

        Assert.Equal(new NmPattern(n, m), pattern);
        Assert.Equal($"{n}:{m}", pattern.ToString());
        Assert.Equal((double)n / m, pattern.Sparsity);
    }

    [Theory]
    [InlineData("4:2")]
    [InlineData("2:2")]
    [InlineData("0:4")]
    [InlineData("-1:4")]
    [InlineData("2/4")]
    [InlineData("2:4:8")]
    [InlineData("a:b")]
    [InlineData("")]
    [InlineData("2 : 4x")]
    public void RefusesWhatIsNotAPattern(string text)
    {
        var error = Assert.Throws<FormatException>(() => NmPattern.Parse(text));

        Assert.Contains($"'{text}'", error.Message);
        Assert.False(NmPattern.TryParse(text, out _));
    }

    [Fact]
    public void ConstructorChecksTheSameRule()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new NmPattern(4, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NmPattern(0, 4));
    }

    [Fact]
    public void ATensorWhoseWidthTheGroupDoesNotDivideIsRefusedByNameAndShape()
    {
        using var weight = zeros(3, 6);
        var pattern = new NmPattern(2, 4);

        var error = Assert.Throws<ArgumentException>(() => pattern.MagnitudeMask(weight, null, "model.layers.0.mlp.down_proj.weight"));

        Assert.Contains("'model.layers.0.mlp.down_proj.weight'", error.Message);
        Assert.Contains("[3, 6]", error.Message);
        Assert.Contains("2:4", error.Message);
        Assert.Throws<ArgumentException>(() => pattern.MagnitudeMask(new byte[72], TensorDType.F32, 3, 6, "t"));
    }

    [Fact]
    public void MagnitudeTwoFourByHand()
    {
        // |w| group 0: 0.5, 3, 0.5, 0.5 → the two lowest-indexed 0.5s (c0, c2).
        // |w| group 1: 1, 0, 4, 0 (−0) → the two zeros (c5, c7).
        using var weight = Matrix(new float[,] { { 0.5f, -3, 0.5f, 0.5f, -1, 0, 4, -0f } });
        var pattern = NmPattern.Parse("2:4");

        var mask = pattern.MagnitudeMask(weight);

        Assert.Equal([true, false, true, false, false, true, false, true], mask.ToBools());

        // Cumulative: c3 already masked, so group 0 adds one (c0); group 1 already holds c4 and c6.
        var existing = Mask(false, false, false, true, true, false, true, false);
        var cumulative = pattern.MagnitudeMask(weight, existing);
        Assert.Equal([true, false, false, true, true, false, true, false], cumulative.ToBools());
        Assert.Equal([false, false, false, true, true, false, true, false], existing.ToBools());
    }

    [Fact]
    public void CheckpointBytesAndTensorsGiveTheSameMask()
    {
        const int rows = 6, cols = 16;
        using var scope = NewDisposeScope();
        using var generator = new Generator(9, CPU);
        var bf16 = randn([rows, cols], generator: generator).to(ScalarType.BFloat16);
        // bf16 widens to fp32 exactly: its bits are the top half of the fp32 bits.
        var raw = Values(bf16).SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray();
        var pattern = new NmPattern(4, 8);

        var fromTensor = pattern.MagnitudeMask(bf16);
        var fromBytes = pattern.MagnitudeMask(raw, TensorDType.BF16, rows, cols, "w");

        Assert.True(fromTensor.SequenceEqual(fromBytes));
        Assert.True(pattern.IsValid(fromTensor, rows, cols));
        Assert.Equal(rows * cols / 2, fromTensor.CountSet());
    }

    /// <summary>
    /// An encoder's weight stored [in, out]: the groups run down each column (M consecutive input features of one output),
    /// so the mask is the [out, in] mask of the transposed weight, transposed back.
    /// </summary>
    [Fact]
    public void InputRowsOfAStoredInOutWeightByHandAndAgainstTheTransposedWeight()
    {
        // Stored [in 4, out 2]: column 0 holds |w| 0.5, 3, 0.5, 0.5 → rows 0 and 2 (ties by lower input); column 1 holds
        // 1, 0, 4, −0 → rows 1 and 3.
        float[] stored = [0.5f, -1, -3, 0, 0.5f, 4, 0.5f, -0f];
        var raw = stored.SelectMany(BitConverter.GetBytes).ToArray();
        var pattern = NmPattern.Parse("2:4");
        var mask = pattern.MagnitudeMaskOfInputRows(raw, TensorDType.F32, 4, 2, "w");
        Assert.Equal([true, false, false, true, true, false, false, true], mask.ToBools());
        // Cumulative, as the [out, in] mask is: an input already masked counts toward its group.
        var existing = Mask(false, false, false, false, false, false, true, false);
        Assert.Equal([true, false, false, true, false, false, true, true], pattern.MagnitudeMaskOfInputRows(raw, TensorDType.F32, 4, 2, "w", existing).ToBools());
        Assert.Contains("input dimension 6 is not a multiple of 4", Assert.Throws<ArgumentException>(() => pattern.MagnitudeMaskOfInputRows(new byte[6 * 4 * 4], TensorDType.F32, 6, 4, "w")).Message);

        // Randomized, with ties (values from a handful of levels): the same choice as the row-major mask of the transpose.
        var random = new Random(17);
        foreach (var (n, m, rows, cols) in new[] { (2, 4, 16, 5), (4, 8, 24, 3), (1, 4, 8, 7) })
        {
            var values = Enumerable.Range(0, rows * cols).Select(_ => (float)(random.Next(-3, 4) * 0.25)).ToArray();
            var transposed = new float[values.Length];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                    transposed[c * rows + r] = values[r * cols + c];
            var p = new NmPattern(n, m);
            var expected = p.MagnitudeMask(transposed.SelectMany(BitConverter.GetBytes).ToArray(), TensorDType.F32, cols, rows, "t").Transposed(cols, rows);
            var actual = p.MagnitudeMaskOfInputRows(values.SelectMany(BitConverter.GetBytes).ToArray(), TensorDType.F32, rows, cols, "w");
            Assert.True(expected.SequenceEqual(actual), $"{n}:{m} [{rows}, {cols}]");
            Assert.True(p.IsValid(actual.Transposed(rows, cols), cols, rows));
        }
    }

    [Fact]
    public void IsValidChecksEveryGroup()
    {
        var pattern = new NmPattern(2, 4);
        var mask = Mask(true, true, false, false, false, true, true, true);

        Assert.True(pattern.IsValid(mask, 1, 8));
        Assert.True(pattern.IsValid(mask, 2, 4));
        mask[1] = false;
        Assert.False(pattern.IsValid(mask, 1, 8));
        Assert.False(new NmPattern(2, 3).IsValid(new BitMask(8), 2, 4)); // 3 does not divide 4
        Assert.Throws<ArgumentException>(() => pattern.IsValid(mask, 3, 4));
    }

    [Fact]
    public void NaNWeightsAreRefusedByName()
    {
        using var weight = Matrix(new float[,] { { 1, 2, 3, 4 }, { 1, float.NaN, 3, 4 } });

        var error = Assert.Throws<NaNWeightException>(() => new NmPattern(2, 4).MagnitudeMask(weight, null, "v_proj"));

        Assert.Equal("v_proj", error.TensorName);
        Assert.Equal(5, error.Index);
    }
}
