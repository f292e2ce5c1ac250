using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;
using Shears.Pruning.Selection;
using static Shears.Pruning.Tests.Calibration.CalibrationData;
using static Shears.Pruning.Tests.Quantization.GptqData;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>SparseGPT's joint mode: one sweep prunes and quantizes, one error update for both.</summary>
public class JointSparseGptTests
{
    [Fact]
    public void APrunedColumnSpreadsItsErrorAndTheSurvivorIsQuantizedAfterIt()
    {
        // The correlated pair of the SparseGPT tests: H = [[1, 1], [1, 2]], H⁻¹ = [[2, −1], [−1, 1]], no dampening.
        // W = (−0.5, 1.5): saliency 0.25/2 = 0.125 < 2.25/(1/2) = 4.5, so column 0 is pruned; 4-bit per channel from
        // the row with the pruned weight as 0: scale = 1.5 / 7.5 = 0.2. Column 0 → the zero point, e = −0.5, and OBS
        // moves the survivor by −(−0.5/2)·(−1) = −0.25 to 1.25: 6.25 → 6, ŵ = 1.2.
        using var stats = StatsOf(new float[,] { { 1, 1 }, { 0, 1 } }, withGram: true);
        using var weight = Matrix(new float[,] { { -0.5f, 1.5f } });
        var scheme = new QuantScheme("int4-channel", 4, true, 0, false);

        using var result = SparseGpt.PruneAndQuantize(weight, stats, 0.5, scheme, TensorDType.F32, dampening: 0);

        Assert.Equal([true, false], result.Mask.ToBools());
        var q = result.Quantized!;
        Assert.Equal(new QuantParams(0.2f, 0), q.Group(0, 0));
        Assert.Equal((0, 6), ((int)q.Value(0, 0), (int)q.Value(0, 1)));
        Assert.Equal([0, 6 * 0.2f], Values(result.Weight));
        // Loss: 0.5²/(2·U₀₀²) + 0.05²/(2·U₁₁²) with U₀₀² = 2, U₁₁² = ½.
        Assert.Equal(0.0625 + 0.0025, result.Loss, 5);
        // The error is measured against the input with the mask applied: |1.2 − 1.5|.
        Assert.Equal(0.3, q.AbsErrorSum, 5);
    }

    [Theory]
    [InlineData(0.5, 0, 0, QuantScheme.W4A16Asym, 8, "BF16", 16, 11)]
    [InlineData(0.3, 0, 0, QuantScheme.W8A16, 0, "F32", 12, 12)]
    [InlineData(0.6, 0, 0, QuantScheme.W4A16, 16, "F16", 16, 13)]
    [InlineData(0.5, 2, 4, QuantScheme.W4A16, 8, "BF16", 16, 14)]
    [InlineData(0.5, 4, 8, QuantScheme.W4A16Asym, 16, "F32", 8, 15)]
    public void MatchesTheTextbookJointSweepComputedInFp64(double sparsity, int n, int m, string name, int groupSize, string dtypeName, int blockSize, int seed)
    {
        const int rows = 8, cols = 48;
        var scheme = Scheme(name, groupSize);
        var dtype = DType(dtypeName);
        var pattern = n == 0 ? null : new NmPattern(n, m);
        var w = Weights(seed, rows, cols, null);
        var x = Inputs(seed, 200, cols);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = SparseGpt.PruneAndQuantize(weight, stats, sparsity, scheme, dtype, pattern, blockSize);
        var expected = ReferenceGptq.Quantize(x, w, null, scheme, dtype, 0.01, false, result.Quantized, sparsity, pattern, blockSize);

        Assert.Equal(expected.Mask.ToBools(), result.Mask.ToBools());
        GptqTests.AssertSame(expected, result.Quantized!, rows, cols);
        var actual = Values(result.Weight);
        Assert.Equal(Dequantized(result.Quantized!), actual);
        GptqTests.AssertDequantizedMatch(expected.Dequantized, actual, dtype);
        Assert.Equal(expected.Loss, result.Loss, expected.Loss * 1e-4);
    }

    [Theory]
    [InlineData(0.0, 0, 0)]
    [InlineData(0.37, 0, 0)]
    [InlineData(0.5, 0, 0)]
    [InlineData(0.9, 0, 0)]
    [InlineData(0.5, 2, 4)]
    [InlineData(0.5, 4, 8)]
    public void CountsAreExactAndPrunedWeightsSitOnTheZeroPoint(double sparsity, int n, int m)
    {
        // 72 columns in blocks of 16 and groups of 16: the last of each holds 8.
        const int rows = 5, cols = 72;
        var scheme = QuantScheme.Parse(QuantScheme.W4A16Asym, 16);
        var pattern = n == 0 ? null : new NmPattern(n, m);
        var rng = new Random(21);
        var existing = new BitMask(rows * cols);
        for (int i = 0; i < existing.Length; i++) if (rng.NextDouble() < 0.1) existing.Set(i);
        using var stats = StatsOf(Inputs(22, 200, cols), withGram: true);
        using var weight = Matrix(Weights(23, rows, cols, null));

        foreach (var start in new[] { null, existing })
        {
            using var result = SparseGpt.PruneAndQuantize(weight, stats, sparsity, scheme, TensorDType.BF16, pattern, blockSize: 16, existing: start);

            var mask = result.Mask;
            if (pattern is not null) Assert.True(pattern.IsValid(mask, rows, cols));
            else Assert.Equal(Math.Max(Counts.Target(sparsity, rows * cols), start?.CountSet() ?? 0), mask.CountSet());
            if (start is not null) AssertContains(mask, start);
            AssertOnTheGrid(result, mask, scheme);
        }
    }

    [Fact]
    public void QuantizingWhilePruningBeatsQuantizingAfterPruningWithoutCompensation()
    {
        // The joint sweep compensates the rounding too; rounding SparseGPT's weights to nearest afterwards does not.
        const int rows = 16, cols = 64;
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 16);
        var x = Inputs(51, 300, cols);
        var w = Weights(52, rows, cols, null);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var joint = SparseGpt.PruneAndQuantize(weight, stats, 0.5, scheme, TensorDType.F32);
        using var pruned = SparseGpt.Prune(weight, stats, 0.5);
        var rtn = QuantizedRows.RoundToNearest(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Values(pruned.Weight).AsSpan()),
            TensorDType.F32, rows, cols, scheme, "w");

        double together = OutputError(x, w, Values(joint.Weight)), after = OutputError(x, w, Dequantized(rtn));
        Assert.True(together < after, $"joint {together}, pruned then rounded {after}");
    }

    [Fact]
    public void BadInputsAreRefusedByName()
    {
        using var stats = StatsOf(Inputs(1, 20, 8), withGram: true);
        using var weight = ones(2, 8);
        const string name = "model.layers.0.mlp.down_proj.weight";
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 4);

        Assert.Throws<ArgumentNullException>(() => SparseGpt.PruneAndQuantize(weight, stats, 0.5, null!, TensorDType.F32));
        var dtype = Assert.Throws<ArgumentException>(() => SparseGpt.PruneAndQuantize(weight, stats, 0.5, scheme, TensorDType.I8, tensorName: name));
        Assert.Contains(name, dtype.Message);
        Assert.Equal("dtype", dtype.ParamName);
        Assert.Contains(name, Assert.Throws<ArgumentException>(() => SparseGpt.PruneAndQuantize(ones(2, 5), stats, 0.5, scheme, TensorDType.F32, tensorName: name)).Message);
    }

    [Fact]
    public void LeavesNoTensorBehindButItsResult()
    {
        using var generator = new Generator(1, CPU);
        using var weight = randn([8, 32], generator: generator);
        using var x = randn([64, 32], generator: generator);
        using var stats = StatsOf(x, withGram: true);
        var scheme = QuantScheme.Parse(QuantScheme.W4A16Asym, 8);
        var statistics = DisposeScopeManager.Statistics;
        long before = statistics.ThreadTotalLiveCount;

        using (SparseGpt.PruneAndQuantize(weight, stats, 0.5, scheme, TensorDType.BF16, blockSize: 8)) { }
        using (SparseGpt.PruneAndQuantize(weight, stats, 0.5, scheme, TensorDType.BF16, new NmPattern(2, 4), blockSize: 8)) { }

        Assert.Equal(before, statistics.ThreadTotalLiveCount);
    }

    /// <summary>Every weight is its quantized value dequantized; masked ones are the zero point and exactly +0.0.</summary>
    private static void AssertOnTheGrid(SparseGptResult result, BitMask mask, QuantScheme scheme)
    {
        var q = result.Quantized!;
        var values = Values(result.Weight);
        AssertMaskedAreZero(result.Weight, mask);
        for (int r = 0; r < q.Rows; r++)
            for (int c = 0; c < q.Columns; c++)
            {
                var p = q.Group(r, q.GroupOf(c));
                int v = q.Value(r, c);
                Assert.InRange(v, scheme.QMin, scheme.QMax);
                Assert.Equal(GroupQuantizer.Dequantize(v, p, q.DType), values[r * q.Columns + c]);
                if (mask[(long)r * q.Columns + c]) Assert.Equal(p.ZeroPoint, v);
            }
        Assert.Equal(Dequantized(q), values);
    }
}
