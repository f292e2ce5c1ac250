using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;
using Shears.Pruning.Scoring;
using static Shears.Pruning.Tests.Calibration.CalibrationData;
using static Shears.Pruning.Tests.Quantization.GptqData;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Quantization;

public class GptqTests
{
    [Fact]
    public void WithADiagonalHessianItIsRoundToNearest()
    {
        // X = I₄ (n = 4): H = 2·XᵀX/4 = 0.5·I, λ = 0.01·0.5, so U is diagonal and no error reaches another column.
        // W4A16 with groups of 2: scale = absmax / 7.5, q = clamp(round_half_even(w / scale), −8, 7).
        // Row 0, (1.875, −0.6): scale 0.25; 7.5 → 8 → clamped 7 (1.75); −2.4 → −2 (−0.5).
        //        (3.75, [masked]): scale 0.5; 7.5 → 7 (3.5); the masked weight → 0.
        // Row 1, (−0.9375, 0.3): scale 0.125; −7.5 → −8 (−1); 2.4 → 2 (0.25).
        //        (0.5, −3.75): scale 0.5; 1 (0.5); −7.5 → −8 (−4).
        float[,] w = { { 1.875f, -0.6f, 3.75f, 0 }, { -0.9375f, 0.3f, 0.5f, -3.75f } };
        var mask = Mask(false, false, false, true, false, false, false, false);
        using var stats = StatsOf(new float[,] { { 1, 0, 0, 0 }, { 0, 1, 0, 0 }, { 0, 0, 1, 0 }, { 0, 0, 0, 1 } }, withGram: true);
        using var weight = Matrix(w);
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 2);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.F32, mask);

        var q = result.Quantized;
        Assert.Equal(new sbyte[] { 7, -2, 7, 0, -8, 2, 1, -8 }, Enumerable.Range(0, 8).Select(i => q.Value(i / 4, i % 4)).ToArray());
        Assert.Equal([new QuantParams(0.25f, 0), new QuantParams(0.5f, 0), new QuantParams(0.125f, 0), new QuantParams(0.5f, 0)],
            [q.Group(0, 0), q.Group(0, 1), q.Group(1, 0), q.Group(1, 1)]);
        Assert.Equal([1.75f, -0.5f, 3.5f, 0, -1, 0.25f, 0.5f, -4], Values(result.Weight));
        Assert.False(result.RoundToNearest); // the factor exists; it just moves nothing
        // Σ e² = 0.125² + 0.1² + 0.25² + 0.0625² + 0.05² + 0.25² = 0.15703125; U_jj⁻² = 0.505; loss = Σ e²·0.505 / 2.
        Assert.Equal(0.15703125 * 0.505 / 2, result.Loss, 6);
        var rtn = QuantizedRows.RoundToNearest(Bytes(Flat(w)), TensorDType.F32, 2, 4, scheme, "w");
        Assert.Equal(rtn.DequantizedBytes(), q.DequantizedBytes());
        Assert.Equal(rtn.AbsErrorSum, q.AbsErrorSum, 6);
    }

    [Fact]
    public void TheSecondColumnAbsorbsTheFirstColumnsRoundingError()
    {
        // Inputs (1, 1) and (0, 1), n = 2: H = [[1, 1], [1, 2]], H⁻¹ = [[2, −1], [−1, 1]]; no dampening.
        // 4-bit per channel, W = (1.5, 0.5): scale = 1.5 / 7.5 = 0.2. Column 0: 7.5 − ε → 7 (1.4), e = 0.1.
        // OBS: w₁ −= e·[H⁻¹]₀₁/[H⁻¹]₀₀ = 0.1·(−1/2) → 0.55, which rounds to 3 (0.6) where RTN's 0.5 → 2.5 → 2 (0.4).
        // Loss = 0.1²/(2·2) + 0.05²/(2·½) = 0.005 = (w − ŵ)ᵀH(w − ŵ)/2 with w − ŵ = (0.1, −0.1); RTN's is 0.025.
        using var stats = StatsOf(new float[,] { { 1, 1 }, { 0, 1 } }, withGram: true);
        using var weight = Matrix(new float[,] { { 1.5f, 0.5f } });
        var scheme = new QuantScheme("int4-channel", 4, true, 0, false);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.F32, dampening: 0);

        Assert.Equal((7, 3), ((int)result.Quantized.Value(0, 0), (int)result.Quantized.Value(0, 1)));
        Assert.Equal(new QuantParams(0.2f, 0), result.Quantized.Group(0, 0));
        Assert.Equal([7 * 0.2f, 3 * 0.2f], Values(result.Weight));
        Assert.Equal(0.005, result.Loss, 6);
        var rtn = QuantizedRows.RoundToNearest(Bytes([1.5f, 0.5f]), TensorDType.F32, 1, 2, scheme, "w");
        Assert.Equal(2, rtn.Value(0, 1));
    }

    [Theory]
    [InlineData(8, 32, QuantScheme.W4A16, 8, 0.0, "F32", false, 16, 1)]
    [InlineData(8, 32, QuantScheme.W4A16Asym, 8, 0.3, "BF16", false, 8, 2)]
    [InlineData(8, 32, QuantScheme.W4A16, 8, 0.5, "F16", false, 12, 3)]
    [InlineData(16, 64, QuantScheme.W4A16, 16, 0.3, "BF16", false, 32, 4)]
    [InlineData(16, 64, QuantScheme.W4A16Asym, 16, 0.0, "F32", false, 24, 5)]
    [InlineData(16, 64, QuantScheme.W8A16, 0, 0.4, "BF16", false, 16, 6)]
    [InlineData(16, 64, QuantScheme.W4A16Asym, 16, 0.0, "BF16", false, 128, 7)]
    [InlineData(16, 64, QuantScheme.W4A16, 16, 0.3, "F32", true, 16, 8)]
    [InlineData(8, 32, QuantScheme.W4A16Asym, 8, 0.5, "BF16", true, 12, 9)]
    [InlineData(16, 64, QuantScheme.W8A16, 0, 0.0, "F32", true, 32, 10)]
    public void MatchesTheTextbookSweepComputedInFp64(int rows, int cols, string name, int groupSize, double masked, string dtypeName, bool actOrder, int blockSize, int seed)
    {
        var scheme = Scheme(name, groupSize);
        var dtype = DType(dtypeName);
        var mask = RandomMask(seed, rows, cols, masked);
        var w = Weights(seed, rows, cols, mask);
        var x = Inputs(seed, 4 * cols, cols);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = Gptq.Quantize(weight, stats, scheme, dtype, mask, blockSize, actOrder: actOrder);
        var expected = ReferenceGptq.Quantize(x, w, mask, scheme, dtype, 0.01, actOrder, result.Quantized);

        AssertSame(expected, result.Quantized, rows, cols);
        var actual = Values(result.Weight);
        Assert.Equal(Dequantized(result.Quantized), actual);
        AssertDequantizedMatch(expected.Dequantized, actual, dtype);
        Assert.Equal(expected.Loss, result.Loss, expected.Loss * 1e-4);
        Assert.False(result.RoundToNearest);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DeadInputsZeroTheirColumn(bool actOrder)
    {
        // Inputs 3 and 10 are zero on every sample: H_jj = 0 → 1, and their weights become 0 (q = zero point).
        const int rows = 6, cols = 16;
        var x = Inputs(61, 80, cols);
        for (int k = 0; k < x.GetLength(0); k++) (x[k, 3], x[k, 10]) = (0, 0);
        var w = Weights(62, rows, cols, null);
        var scheme = QuantScheme.Parse(QuantScheme.W4A16Asym, 4);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.BF16, blockSize: 8, actOrder: actOrder);
        var expected = ReferenceGptq.Quantize(x, w, null, scheme, TensorDType.BF16, 0.01, actOrder, result.Quantized);

        var q = result.Quantized;
        var values = Values(result.Weight);
        for (int r = 0; r < rows; r++)
            foreach (int c in new[] { 3, 10 })
            {
                Assert.Equal(0f, values[r * cols + c]);
                Assert.Equal(q.Group(r, q.GroupOf(c)).ZeroPoint, q.Value(r, c));
            }
        AssertSame(expected, q, rows, cols);
        Assert.Equal(expected.Dequantized, values);
        if (actOrder) Assert.Equal([3, 3], new[] { q.GroupOf(3), q.GroupOf(10) }); // H_jj = 0 sorts last
    }

    internal static void AssertSame(ReferenceGptq.Result expected, QuantizedRows actual, int rows, int cols)
    {
        // Near-midpoint roundings the reference left to the code (ReferenceGptq's remarks): at most a couple.
        Assert.True(expected.Ambiguous <= 2, $"{expected.Ambiguous} quotients within {ReferenceGptq.Tolerance} of a midpoint");
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < actual.GroupsPerRow; g++)
            {
                QuantParams want = expected.Groups[r * actual.GroupsPerRow + g], got = actual.Group(r, g);
                // Rounded to bf16 or fp16 a scale is the same in both; in fp32 it is absmax / 7.5 (or the range over 15)
                // of weights the fp32 and fp64 updates leave a few ulps apart.
                if (actual.DType == TensorDType.F32)
                {
                    Assert.True(Math.Abs(want.Scale - got.Scale) <= 4 * (double)MathF.BitIncrement(want.Scale) - 4 * (double)want.Scale,
                        $"row {r}, group {g}: scale {got.Scale}, expected {want.Scale}");
                    Assert.Equal(want.ZeroPoint, got.ZeroPoint);
                }
                else Assert.Equal(want, got);
            }
            for (int c = 0; c < cols; c++)
                Assert.True(expected.Values[r * cols + c] == actual.Value(r, c), $"[{r}, {c}]: expected {expected.Values[r * cols + c]}, got {actual.Value(r, c)}");
        }
        if (expected.GroupIndex is null) Assert.False(actual.HasGroupIndex);
        else Assert.Equal(expected.GroupIndex, actual.GroupIndex.ToArray());
    }

    /// <summary>Equal values dequantize alike: exactly in bf16 and fp16, within the fp32 scales' ulps in fp32.</summary>
    internal static void AssertDequantizedMatch(float[] expected, float[] actual, TensorDType dtype)
    {
        if (dtype != TensorDType.F32)
        {
            Assert.Equal(expected, actual);
            return;
        }
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-6 * Math.Abs(expected[i]), $"element {i}: expected {expected[i]}, got {actual[i]}");
    }

    [Theory]
    [InlineData(QuantScheme.W4A16, 16, false)]
    [InlineData(QuantScheme.W4A16Asym, 16, true)]
    [InlineData(QuantScheme.W8A16, 0, true)]
    public void MaskedWeightsEndAtTheZeroPointAndDequantizeToExactZero(string name, int groupSize, bool actOrder)
    {
        const int rows = 12, cols = 48;
        var scheme = Scheme(name, groupSize);
        var mask = RandomMask(31, rows, cols, 0.5)!;
        var w = Weights(32, rows, cols, mask);
        var x = Inputs(33, 200, cols);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.BF16, mask, blockSize: 16, actOrder: actOrder);

        var q = result.Quantized;
        AssertMaskedAreZero(result.Weight, mask);
        var dequantized = Dequantized(q);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (mask[(long)r * cols + c])
                {
                    Assert.Equal(q.Group(r, q.GroupOf(c)).ZeroPoint, q.Value(r, c));
                    Assert.Equal(0u, BitConverter.SingleToUInt32Bits(dequantized[r * cols + c]));
                }
        // Unmasked weights that dequantize to 0 are rounding, not masking: the count of zeros is at least the mask's.
        Assert.True(dequantized.Count(v => v == 0) >= mask.CountSet());
    }

    [Theory]
    [InlineData(QuantScheme.W4A16, 16, 0.0, 0.6)] // seed 2022: 0.51 of round-to-nearest's output error
    [InlineData(QuantScheme.W4A16Asym, 32, 0.0, 0.65)] // 0.54
    [InlineData(QuantScheme.W4A16, 16, 0.5, 0.85)] // 0.79: half the weights are held at 0 and move nothing
    public void ItReconstructsTheLayerBetterThanRoundToNearest(string name, int groupSize, double masked, double bound)
    {
        // Correlated inputs with a few loud features, as in LLM activations.
        const int rows = 32, cols = 64, samples = 512;
        var rng = new Random(2022);
        var mixing = new double[cols, cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++) mixing[i, j] = (i == j ? 1 : 0) + 0.3 * Gaussian(rng);
        var loudness = Enumerable.Range(0, cols).Select(_ => Math.Exp(0.8 * Gaussian(rng))).ToArray();
        var z = new double[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++) z[k, j] = Gaussian(rng);
        var x = new float[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int i = 0; i < cols; i++) s += z[k, i] * mixing[i, j];
                x[k, j] = (float)(s * loudness[j]);
            }
        var mask = RandomMask(5, rows, cols, masked);
        var w = new float[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) w[r, c] = mask?[(long)r * cols + c] == true ? 0 : (float)Gaussian(rng);
        var scheme = Scheme(name, groupSize);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var gptq = Gptq.Quantize(weight, stats, scheme, TensorDType.F32, mask);
        var rtn = QuantizedRows.RoundToNearest(Bytes(Flat(w)), TensorDType.F32, rows, cols, scheme, "w");

        double ours = OutputError(x, w, Values(gptq.Weight)), nearest = OutputError(x, w, Dequantized(rtn));
        Assert.True(ours < bound * nearest, $"GPTQ {ours}, round-to-nearest {nearest}");
        if (mask is not null) AssertMaskedAreZero(gptq.Weight, mask);
    }

    [Theory]
    [InlineData(QuantScheme.W4A16, 8)]
    [InlineData(QuantScheme.W4A16Asym, 12)] // 40 columns: the last group holds 4
    public void ActivationOrderGroupsAreConsecutiveInThatOrder(string name, int groupSize)
    {
        const int rows = 6, cols = 40;
        var scheme = Scheme(name, groupSize);
        var mask = RandomMask(41, rows, cols, 0.25);
        var w = Weights(42, rows, cols, mask);
        var x = Inputs(43, 160, cols);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.BF16, mask, blockSize: 16, actOrder: true);

        var q = result.Quantized;
        var gIdx = q.GroupIndex.ToArray();
        // Rank by decreasing H_jj, ties by lower column (columns 2t and 2t + 1 tie by construction).
        var diagonal = Enumerable.Range(0, cols).Select(j => Enumerable.Range(0, x.GetLength(0)).Sum(k => (double)x[k, j] * x[k, j])).ToArray();
        Assert.Equal(diagonal[0], diagonal[1]);
        var rank = new int[cols];
        var ranked = Enumerable.Range(0, cols).OrderByDescending(j => diagonal[j]).ThenBy(j => j).ToArray();
        for (int p = 0; p < cols; p++) rank[ranked[p]] = p;
        Assert.Equal(rank.Select(p => p / groupSize), gIdx);
        Assert.Equal(Enumerable.Range(0, q.GroupsPerRow).Select(g => Math.Min(groupSize, cols - g * groupSize)),
            Enumerable.Range(0, q.GroupsPerRow).Select(g => gIdx.Count(i => i == g)));
        Assert.Equal(gIdx, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(q.GroupIndexBytes()).ToArray());

        // A loader's dequantization: column j with group g_idx[j]'s parameters.
        var loaded = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) loaded[r * cols + c] = GroupQuantizer.Dequantize(q.Value(r, c), q.Group(r, gIdx[c]), TensorDType.BF16);
        Assert.Equal(loaded, Values(result.Weight));
        Assert.Equal(loaded, Dequantized(q));
    }

    [Fact]
    public void AHessianWithoutACholeskyFactorFallsBackToRoundToNearest()
    {
        // Two identical input features: H = [[4, 4], [4, 4]] is singular, and there is no dampening to rescue it.
        using var stats = StatsOf(new float[,] { { 2, 2, 1 }, { 0, 0, 3 } }, withGram: true);
        float[] w = [0.7f, -1.3f, 0.4f, 2.1f, 0.05f, -0.9f];
        using var weight = tensor(w, [2, 3]);
        var scheme = QuantScheme.Parse(QuantScheme.W4A16Asym, 2);

        using var result = Gptq.Quantize(weight, stats, scheme, TensorDType.F32, dampening: 0);
        using var damped = Gptq.Quantize(weight, stats, scheme, TensorDType.F32);

        Assert.True(result.RoundToNearest);
        var rtn = QuantizedRows.RoundToNearest(Bytes(w), TensorDType.F32, 2, 3, scheme, "w");
        Assert.Equal(Enumerable.Range(0, 6).Select(i => rtn.Value(i / 3, i % 3)), Enumerable.Range(0, 6).Select(i => result.Quantized.Value(i / 3, i % 3)));
        Assert.Equal(Dequantized(rtn), Values(result.Weight));
        Assert.False(damped.RoundToNearest);
        Assert.NotEqual(Dequantized(rtn), Values(damped.Weight)); // the errors do move the columns when they can
    }

    [Fact]
    public void BadInputsAreRefusedByName()
    {
        using var scope = NewDisposeScope();
        float[,] x = { { 1, 2, 3, 4 }, { 0, 1, 0, 1 }, { 2, 0, 1, 0 }, { 1, 1, 1, 2 }, { 0, 3, 1, 1 } };
        using var stats = StatsOf(x, withGram: true);
        using var noGram = StatsOf(x, withGram: false);
        var weight = ones(2, 4);
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 2);
        const string name = "model.layers.3.self_attn.o_proj.weight";

        Assert.Contains(name, Assert.Throws<ArgumentException>(() => Gptq.Quantize(weight, noGram, scheme, TensorDType.F32, tensorName: name)).Message);
        Assert.Contains(name, Assert.Throws<ArgumentException>(() => Gptq.Quantize(ones(2, 5), stats, scheme, TensorDType.F32, tensorName: name)).Message);
        var mask = Assert.Throws<ArgumentException>(() => Gptq.Quantize(weight, stats, scheme, TensorDType.F32, new BitMask(7), tensorName: name));
        Assert.Contains(name, mask.Message);
        Assert.Equal("mask", mask.ParamName);
        var dtype = Assert.Throws<ArgumentException>(() => Gptq.Quantize(weight, stats, scheme, TensorDType.I32, tensorName: name));
        Assert.Contains(name, dtype.Message);
        Assert.Equal("dtype", dtype.ParamName);
        Assert.Throws<ArgumentNullException>(() => Gptq.Quantize(weight, stats, null!, TensorDType.F32));
        Assert.Equal("blockSize", Assert.Throws<ArgumentOutOfRangeException>(() => Gptq.Quantize(weight, stats, scheme, TensorDType.F32, blockSize: 0)).ParamName);
        Assert.Equal("dampening", Assert.Throws<ArgumentOutOfRangeException>(() => Gptq.Quantize(weight, stats, scheme, TensorDType.F32, dampening: -1)).ParamName);
        var nan = Assert.Throws<NaNWeightException>(() => Gptq.Quantize(tensor(new float[,] { { 1, 2, 3, 4 }, { 5, 6, float.NaN, 8 } }), stats, scheme, TensorDType.F32, tensorName: name));
        Assert.Equal((name, 6L), (nan.TensorName, nan.Index));
        var infinite = Assert.Throws<ArgumentException>(() => Gptq.Quantize(tensor(new float[,] { { 1, float.PositiveInfinity, 3, 4 }, { 5, 6, 7, 8 } }), stats, scheme, TensorDType.F32, tensorName: name));
        Assert.Contains(name, infinite.Message);
        Assert.Contains("element 1", infinite.Message);
    }

    [Fact]
    public void LeavesNoTensorBehindButItsResult()
    {
        using var generator = new TorchSharp.torch.Generator(1, CPU);
        using var weight = randn([8, 32], generator: generator);
        using var x = randn([64, 32], generator: generator);
        using var stats = StatsOf(x, withGram: true);
        var mask = RandomMask(1, 8, 32, 0.3);
        var statistics = TorchSharp.DisposeScopeManager.Statistics;
        long before = statistics.ThreadTotalLiveCount;

        using (Gptq.Quantize(weight, stats, QuantScheme.Parse(QuantScheme.W4A16Asym, 8), TensorDType.BF16, mask, blockSize: 12)) { }
        using (Gptq.Quantize(weight, stats, QuantScheme.Parse(QuantScheme.W8A16), TensorDType.F32, mask, blockSize: 8, actOrder: true)) { }
        using (Gptq.Quantize(weight, stats, QuantScheme.Parse(QuantScheme.W4A16, 8), TensorDType.F16, actOrder: true)) { }

        Assert.Equal(before, statistics.ThreadTotalLiveCount);
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
