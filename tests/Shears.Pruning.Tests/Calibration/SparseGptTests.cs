using Shears.Pruning.Calibration;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using TorchSharp;
using static Shears.Pruning.Tests.Calibration.CalibrationData;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Calibration;

public class SparseGptTests
{
    [Fact]
    public void WithADiagonalHessianItIsLayerWiseWandaWithoutCompensation()
    {
        // Orthogonal inputs, n = 4: H = 2·XᵀX/4 = diag(0.5, 2, 4.5, 0.125). With no dampening H⁻¹ and
        // its Cholesky factor U are diagonal, U_jj² = 1/H_jj, so the saliency w²/U_jj² = w²·H_jj and
        // no column's error reaches another.
        float[,] x = { { 1, 0, 0, 0 }, { 0, 2, 0, 0 }, { 0, 0, 3, 0 }, { 0, 0, 0, 0.5f } };
        float[,] w = { { 4, 1, 1.5f, 6 }, { 2.5f, 3, -1.25f, 16 } };
        // Saliencies: row 0: 16·0.5 = 8, 1·2 = 2, 2.25·4.5 = 10.125, 36·0.125 = 4.5
        //             row 1: 6.25·0.5 = 3.125, 9·2 = 18, 1.5625·4.5 = 7.03125, 256·0.125 = 32
        // round(0.375·8) = 3 over the whole layer: 2 (r0c1), 3.125 (r1c0), 4.5 (r0c3) — two in
        // row 0 and one in row 1, where Wanda's per-row count would take 1.5 → 2 from each.
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = SparseGpt.Prune(weight, stats, 0.375, dampening: 0);

        Assert.Equal([false, true, false, true, true, false, false, false], result.Mask.ToBools());
        Assert.Equal([4, 0, 1.5f, 0, 0, 3, -1.25f, 16], Values(result.Weight)); // survivors bit for bit
        // Loss = Σ w²/(2·U_jj²) over the masked: (2 + 3.125 + 4.5) / 2.
        Assert.Equal(4.8125, result.Loss, 5);
    }

    [Fact]
    public void TheSurvivorOfACorrelatedPairTakesTheOptimalBrainSurgeonUpdate()
    {
        // Inputs (1, 1) and (0, 1), n = 2: H = 2·XᵀX/2 = [[1, 1], [1, 2]], H⁻¹ = [[2, -1], [-1, 1]].
        // U (H⁻¹ = UᵀU): U00² = [H⁻¹]00 = 2; U11² = 1/H11 = 1/2 (the inverse over the columns left).
        // W = (1, 0.75). Saliency: 1²/2 = 0.5 for column 0, 0.75²/(1/2) = 1.125 for column 1, so
        // SparseGPT prunes column 0 where magnitude would prune the smaller 0.75.
        // OBS: δ = −(w0/[H⁻¹]00)·H⁻¹[:, 0] = −(1/2)·(2, −1) = (−1, 0.5): W becomes (0, 1.25).
        // Check: 1.25 minimizes ‖X((1, 0.75) − (0, v))‖² = (1.75 − v)² + (0.75 − v)².
        float[,] x = { { 1, 1 }, { 0, 1 } };
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(new float[,] { { 1, 0.75f } });

        using var result = SparseGpt.Prune(weight, stats, 0.5, dampening: 0);

        Assert.Equal([true, false], result.Mask.ToBools());
        var updated = Values(result.Weight);
        Assert.Equal(0f, updated[0]);
        Assert.Equal(1.25f, updated[1], 1e-6f);
        Assert.Equal(0.25, result.Loss, 6); // (1/√2)² / 2
    }

    [Fact]
    public void DampeningIsAFractionOfTheMeanDiagonal()
    {
        // Same pair with the default 1%: λ = 0.01·mean(1, 2) = 0.015, H + λI = [[1.015, 1], [1, 2.015]],
        // det = 1.045225, [(H + λI)⁻¹]00 = 2.015/det, [(H + λI)⁻¹]10 = −1/det, so the survivor becomes
        // 0.75 − (1/[H⁻¹]00)·[H⁻¹]10 = 0.75 + 1/2.015.
        float[,] x = { { 1, 1 }, { 0, 1 } };
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(new float[,] { { 1, 0.75f } });

        using var result = SparseGpt.Prune(weight, stats, 0.5);

        Assert.Equal([true, false], result.Mask.ToBools());
        Assert.Equal(0.75 + 1 / 2.015, Values(result.Weight)[1], 5);
    }

    [Fact]
    public void DeadInputsZeroTheirColumnAndArePrunedFirst()
    {
        // Column 2 never sees a non-zero input: H22 = 0 → 1, and W[:, 2] = 0 as in the paper's code.
        float[,] x = { { 1, 2, 0, 1 }, { 2, -1, 0, 1 }, { 0, 1, 0, 3 }, { 1, 1, 0, -1 }, { -2, 0, 0, 1 } };
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(new float[,] { { 0.1f, 0.2f, 9, 0.3f }, { -5, 7, -9, 6 } });

        using var none = SparseGpt.Prune(weight, stats, 0);
        using var quarter = SparseGpt.Prune(weight, stats, 0.25);

        Assert.Equal(0, none.Mask.CountSet());
        var kept = Values(none.Weight);
        Assert.Equal([0.1f, 0.2f, 0, 0.3f, -5, 7, 0, 6], kept);
        // round(0.25·8) = 2: the two dead weights, whose saliency is now 0.
        Assert.Equal([false, false, true, false, false, false, true, false], quarter.Mask.ToBools());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.1)]
    [InlineData(0.37)]
    [InlineData(0.5)]
    [InlineData(0.9)]
    [InlineData(1.0)]
    public void TheLayerMasksExactlyItsCountAcrossUnevenBlocks(double sparsity)
    {
        // 70 columns in blocks of 16 (the last holds 6); 5 rows, 350 elements.
        const int rows = 5, cols = 70;
        using var scope = NewDisposeScope();
        using var generator = new Generator(21, CPU);
        var weight = randn([rows, cols], generator: generator);
        var x = randn([200, cols], generator: generator).mm(randn([cols, cols], generator: generator));
        using var stats = StatsOf(x, withGram: true);
        var original = Values(weight);

        using var result = SparseGpt.Prune(weight, stats, sparsity, blockSize: 16);

        Assert.Equal(Counts.Target(sparsity, rows * cols), result.Mask.CountSet());
        AssertMaskedAreZero(result.Weight, result.Mask);
        Assert.Equal(original, Values(weight)); // the caller's weight is left as it was
    }

    [Fact]
    public void ExistingMasksAreKeptZeroedAndCountedWhereverTheyLie()
    {
        const int rows = 5, cols = 70;
        using var scope = NewDisposeScope();
        using var generator = new Generator(4, CPU);
        var weight = randn([rows, cols], generator: generator);
        var x = randn([200, cols], generator: generator).mm(randn([cols, cols], generator: generator));
        using var stats = StatsOf(x, withGram: true);

        // All of the last six columns (30 elements): the blocks before must leave room for them.
        var late = new BitMask(rows * cols);
        for (int r = 0; r < rows; r++)
            for (int c = cols - 6; c < cols; c++) late.Set(r * cols + c);
        // A scattered quarter.
        var rng = new Random(8);
        var scattered = new BitMask(rows * cols);
        for (int i = 0; i < scattered.Length; i++) if (rng.NextDouble() < 0.25) scattered.Set(i);

        foreach (var (existing, sparsity) in new[] { (late, 0.2), (late, 0.5), (scattered, 0.3), (scattered, 0.6) })
        {
            using var result = SparseGpt.Prune(weight, stats, sparsity, blockSize: 16, existing: existing);

            Assert.Equal(Math.Max(Counts.Target(sparsity, rows * cols), existing.CountSet()), result.Mask.CountSet());
            AssertContains(result.Mask, existing);
            AssertMaskedAreZero(result.Weight, result.Mask);
        }

        // More already masked than the target: nothing is added, and the masked weights become zero.
        using var over = SparseGpt.Prune(weight, stats, 0.05, blockSize: 16, existing: scattered);
        Assert.True(over.Mask.SequenceEqual(scattered));
        AssertMaskedAreZero(over.Weight, over.Mask);
    }

    [Theory]
    [InlineData(2, 4)]
    [InlineData(4, 8)]
    public void NmMasksAreValidInEveryGroup(int n, int m)
    {
        var pattern = new NmPattern(n, m);
        const int rows = 6, cols = 48;
        using var scope = NewDisposeScope();
        using var generator = new Generator(13, CPU);
        var weight = randn([rows, cols], generator: generator);
        var x = randn([150, cols], generator: generator).mm(randn([cols, cols], generator: generator));
        using var stats = StatsOf(x, withGram: true);
        var rng = new Random(6);
        var existing = new BitMask(rows * cols);
        for (int i = 0; i < existing.Length; i++) if (rng.NextDouble() < 0.15) existing.Set(i);

        using var fresh = SparseGpt.Prune(weight, stats, 0.5, pattern, blockSize: 16);
        using var cumulative = SparseGpt.Prune(weight, stats, 0.5, pattern, blockSize: 16, existing: existing);

        Assert.True(pattern.IsValid(fresh.Mask, rows, cols));
        Assert.Equal(rows * cols / m * n, fresh.Mask.CountSet()); // exactly N in every group
        AssertMaskedAreZero(fresh.Weight, fresh.Mask);
        Assert.True(pattern.IsValid(cumulative.Mask, rows, cols));
        AssertContains(cumulative.Mask, existing);
        AssertMaskedAreZero(cumulative.Weight, cumulative.Mask);
    }

    [Fact]
    public void ItReconstructsTheLayerBetterThanMagnitudeAndWanda()
    {
        // Correlated inputs with a few loud features, as in LLM activations.
        const int rows = 32, cols = 64, samples = 512;
        using var scope = NewDisposeScope();
        using var generator = new Generator(2023, CPU);
        var mixing = eye(cols).add(randn([cols, cols], generator: generator).mul(0.3));
        var loudness = randn([cols], generator: generator).mul(0.8).exp();
        var x = randn([samples, cols], generator: generator).mm(mixing).mul(loudness);
        var weight = randn([rows, cols], generator: generator);
        using var stats = StatsOf(x, withGram: true);

        var keys = HostMagnitude(weight);
        var magnitudeMask = new BitMask(rows * cols);
        LocalSelection.MaskToTarget(keys, magnitudeMask, 0.5);
        double magnitude = ReconstructionError(x, weight, Apply(weight, magnitudeMask));
        double wanda = ReconstructionError(x, weight, Apply(weight, Wanda.Mask(weight, stats, 0.5)));
        using var sparseGpt = SparseGpt.Prune(weight, stats, 0.5);
        double obs = ReconstructionError(x, weight, sparseGpt.Weight);

        // Seed 2023 gives 509 < 577 < 1024.
        Assert.True(obs < 0.95 * wanda, $"SparseGPT {obs}, Wanda {wanda}");
        Assert.True(wanda < 0.8 * magnitude, $"Wanda {wanda}, magnitude {magnitude}");

        var pattern = new NmPattern(2, 4);
        double magnitude24 = ReconstructionError(x, weight, Apply(weight, pattern.MagnitudeMask(weight)));
        double wanda24 = ReconstructionError(x, weight, Apply(weight, Wanda.MaskNm(weight, stats, pattern)));
        using var sparseGpt24 = SparseGpt.Prune(weight, stats, 0.5, pattern);
        double obs24 = ReconstructionError(x, weight, sparseGpt24.Weight);

        // 733 < 889 < 1352.
        Assert.True(obs24 < 0.95 * wanda24, $"2:4 SparseGPT {obs24}, Wanda {wanda24}");
        Assert.True(wanda24 < 0.8 * magnitude24, $"2:4 Wanda {wanda24}, magnitude {magnitude24}");
    }

    [Theory]
    [InlineData(0.5, 0, 0, 16)]
    [InlineData(0.3, 0, 0, 7)]
    [InlineData(0.5, 2, 4, 16)]
    [InlineData(0.5, 4, 8, 8)]
    public void MatchesTheTextbookSequentialObsComputedInFp64(double sparsity, int n, int m, int blockSize)
    {
        const int rows = 6, cols = 40, samples = 120;
        var rng = new Random(17);
        var mixing = new float[cols, cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++) mixing[i, j] = (i == j ? 1 : 0) + (float)(0.4 * Gaussian(rng));
        var z = new float[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++) z[k, j] = (float)Gaussian(rng);
        var x = new float[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int i = 0; i < cols; i++) s += z[k, i] * mixing[i, j];
                x[k, j] = (float)s;
            }
        var w = new float[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) w[r, c] = (float)Gaussian(rng);
        var pattern = n == 0 ? null : new NmPattern(n, m);
        using var stats = StatsOf(x, withGram: true);
        using var weight = Matrix(w);

        using var result = SparseGpt.Prune(weight, stats, sparsity, pattern, blockSize);
        var (expected, expectedMask) = TextbookObs.Prune(x, w, sparsity, pattern, blockSize, 0.01);

        Assert.Equal(expectedMask.ToBools(), result.Mask.ToBools());
        var actual = Values(result.Weight);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Assert.True(Math.Abs(expected[r, c] - actual[r * cols + c]) < 1e-4 * (1 + Math.Abs(expected[r, c])),
                    $"[{r}, {c}]: expected {expected[r, c]}, got {actual[r * cols + c]}");
    }

    private static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    [Fact]
    public void BadInputsAreRefusedByName()
    {
        using var scope = NewDisposeScope();
        float[,] x = { { 1, 2, 3, 4 }, { 0, 1, 0, 1 }, { 2, 0, 1, 0 }, { 1, 1, 1, 2 }, { 0, 3, 1, 1 } };
        using var stats = StatsOf(x, withGram: true);
        using var noGram = StatsOf(x, withGram: false);
        var weight = ones(2, 4);
        const string name = "model.layers.3.self_attn.o_proj.weight";

        Assert.Contains(name, Assert.Throws<ArgumentException>(() => SparseGpt.Prune(weight, noGram, 0.5, tensorName: name)).Message);
        Assert.Contains(name, Assert.Throws<ArgumentException>(() => SparseGpt.Prune(ones(2, 5), stats, 0.5, tensorName: name)).Message);
        var shape = Assert.Throws<ArgumentException>(() => SparseGpt.Prune(ones(2, 6), StatsOf(ones(3, 6), true), 0.5, new NmPattern(2, 4), tensorName: name));
        Assert.Contains(name, shape.Message);
        Assert.Contains("[2, 6]", shape.Message);
        Assert.Contains(name, Assert.Throws<ArgumentException>(() => SparseGpt.Prune(weight, stats, 0.5, new NmPattern(2, 4), blockSize: 6, tensorName: name)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseGpt.Prune(weight, stats, -0.1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseGpt.Prune(weight, stats, 0.5, blockSize: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseGpt.Prune(weight, stats, 0.5, dampening: double.NaN));
        var nan = Assert.Throws<NaNWeightException>(() => SparseGpt.Prune(tensor(new float[,] { { 1, 2, 3, 4 }, { 5, 6, float.NaN, 8 } }), stats, 0.5, tensorName: name));
        Assert.Equal((name, 6L), (nan.TensorName, nan.Index));
    }

    [Fact]
    public void ASingularHessianWithoutDampeningIsReportedByName()
    {
        // Two identical input features: H = [[4, 4], [4, 4]] has no Cholesky factor.
        using var stats = StatsOf(new float[,] { { 2, 2 }, { 0, 0 } }, withGram: true);
        using var weight = Matrix(new float[,] { { 1, 2 } });

        var error = Assert.Throws<InvalidOperationException>(() => SparseGpt.Prune(weight, stats, 0.5, dampening: 0, tensorName: "up_proj"));

        Assert.Contains("'up_proj'", error.Message);
        Assert.Contains("dampening", error.Message);
        using var damped = SparseGpt.Prune(weight, stats, 0.5);
        Assert.Equal(1, damped.Mask.CountSet());
    }

    [Fact]
    public void LeavesNoTensorBehindButItsResult()
    {
        using var generator = new Generator(1, CPU);
        using var weight = randn([8, 32], generator: generator);
        using var x = randn([64, 32], generator: generator);
        using var stats = StatsOf(x, withGram: true);
        var statistics = DisposeScopeManager.Statistics;
        long before = statistics.ThreadTotalLiveCount;

        using (SparseGpt.Prune(weight, stats, 0.5, blockSize: 8)) { }
        using (SparseGpt.Prune(weight, stats, 0.5, new NmPattern(2, 4), blockSize: 8)) { }

        Assert.Equal(before, statistics.ThreadTotalLiveCount);
    }

    private static uint[] HostMagnitude(Tensor weight) =>
        Values(weight).Select(v => ScoreKeys.FromScore(Math.Abs(v))).ToArray();

    [Fact]
    public void ACountForTheTensorIsMetExactly()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(17, CPU);
        var x = randn([64, 24], generator: generator);
        var w = randn([10, 24], generator: generator);
        using var stats = StatsOf(x, withGram: true);
        foreach (long count in new long[] { 0, 1, 77, 120, 239, 240 })
        {
            using var result = SparseGpt.Prune(w, stats, 0, blockSize: 8, count: count);
            Assert.Equal(count, result.Mask.CountSet());
        }
        // The count round_half_to_even(s × n) is the sparsity itself.
        using var bySparsity = SparseGpt.Prune(w, stats, 0.3, blockSize: 8);
        using var byCount = SparseGpt.Prune(w, stats, 0, blockSize: 8, count: 72);
        Assert.Equal(bySparsity.Mask.ToBools(), byCount.Mask.ToBools());
        Assert.Throws<ArgumentOutOfRangeException>(() => SparseGpt.Prune(w, stats, 0, count: 241));
    }
}
