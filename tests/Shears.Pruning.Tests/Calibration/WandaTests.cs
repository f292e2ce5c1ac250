using Shears.Pruning.Calibration;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using TorchSharp;
using static Shears.Pruning.Tests.Calibration.CalibrationData;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Calibration;

public class WandaTests
{
    // Two calibration inputs: ‖X_j‖₂ = sqrt(1²), sqrt(4²), sqrt(2²), sqrt(8²) = 1, 4, 2, 8.
    private static readonly float[,] X = { { 1, 4, 0, 0 }, { 0, 0, 2, 8 } };

    // Scores |W_ij|·‖X_j‖₂:
    //   row 0: |3|·1 = 3, |-1|·4 = 4, |1.5|·2 = 3, |0.25|·8 = 2
    //   row 1: |-0.5|·1 = 0.5, |0.5|·4 = 2, |-4|·2 = 8, |0.125|·8 = 1
    private static readonly float[,] W = { { 3, -1, 1.5f, 0.25f }, { -0.5f, 0.5f, -4, 0.125f } };

    [Fact]
    public void HalfOfEachRowByHandDiffersFromMagnitude()
    {
        using var stats = StatsOf(X);
        using var weight = Matrix(W);

        var mask = Wanda.Mask(weight, stats, 0.5);

        // Two of four per row. Row 0: 2 (column 3), then 3 and 3 tie (columns 0 and 2): column 0,
        // the lower. Row 1: 0.5 (column 0) and 1 (column 3).
        Assert.Equal([true, false, false, true, true, false, false, true], mask.ToBools());
        // Magnitude alone would mask row 0's |-1| and |0.25| (columns 1 and 3): Wanda keeps the -1
        // because its input is four times larger.
        Assert.False(mask[1]);
    }

    [Fact]
    public void MasksAreCumulativeAndAlreadyMaskedCountTowardTheRow()
    {
        using var stats = StatsOf(X);
        using var weight = Matrix(W);
        var existing = Mask(false, false, true, false, false, true, true, true);

        var half = Wanda.Mask(weight, stats, 0.5, existing);

        // Row 0 holds column 2 and needs one more: the smallest of 3 (c0), 4 (c1), 2 (c3) is c3.
        // Row 1 already holds three, more than its two: nothing is added and nothing removed.
        Assert.Equal([false, false, true, true, false, true, true, true], half.ToBools());
        Assert.Equal([false, false, true, false, false, true, true, true], existing.ToBools()); // untouched

        var threeQuarters = Wanda.Mask(weight, stats, 0.75, half);

        // round(0.75·4) = 3 per row: row 0 adds the smaller of 3 (c0) and 4 (c1).
        Assert.Equal([true, false, true, true, false, true, true, true], threeQuarters.ToBools());
    }

    [Fact]
    public void ScoresAreFp32ProductsOfMagnitudeAndNorm()
    {
        float[,] x = { { 1, 1, 0 }, { 1, 0, 0 } }; // norms sqrt 2, 1, 0
        using var stats = StatsOf(x);
        using var weight = Matrix(new float[,] { { 0.1f, -0.3f, 5 }, { float.NegativeInfinity, 0, -0f } });

        var keys = Wanda.Scores(weight, stats);

        Assert.Equal(BitConverter.SingleToUInt32Bits(0.1f * (float)Math.Sqrt(2)), keys[0]);
        Assert.Equal(BitConverter.SingleToUInt32Bits(0.3f), keys[1]);
        Assert.Equal(0u, keys[2]);                      // a dead input scores 0, whatever the weight
        Assert.Equal(ScoreKeys.InfinityKey, keys[3]);   // an infinite weight ranks largest
        Assert.Equal(0u, keys[4]);
        Assert.Equal(0u, keys[5]);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.25)]  // 2.5 per row → 2
    [InlineData(0.35)]  // 3.5 → 4
    [InlineData(0.5)]
    [InlineData(0.9)]
    [InlineData(1.0)]
    public void EveryRowMasksExactlyItsCountTheSmallestScoresFirst(double sparsity)
    {
        const int rows = 7, cols = 10;
        var rng = new Random(11);
        var w = new float[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                w[r, c] = rng.Next(-3, 4) * 0.5f; // many ties
        var x = new float[5, cols];
        for (int n = 0; n < 5; n++)
            for (int c = 0; c < cols; c++)
                x[n, c] = rng.Next(0, 3);
        using var stats = StatsOf(x);
        using var weight = Matrix(w);

        var mask = Wanda.Mask(weight, stats, sparsity);

        long perRow = Counts.Target(sparsity, cols);
        if (sparsity == 0.25) Assert.Equal(2, perRow);
        if (sparsity == 0.35) Assert.Equal(4, perRow);
        var keys = Wanda.Scores(weight, stats);
        for (int r = 0; r < rows; r++)
        {
            var expected = Enumerable.Range(0, cols).OrderBy(c => keys[r * cols + c]).ThenBy(c => c).Take((int)perRow).ToHashSet();
            for (int c = 0; c < cols; c++) Assert.Equal(expected.Contains(c), mask[r * cols + c]);
        }
    }

    [Fact]
    public void TwoFourByHand()
    {
        // ‖X_j‖₂ = 1, 4, 2, 8 | 1, 1, 1, 1.
        float[,] x = { { 1, 4, 0, 0, 1, 0, 0, 0 }, { 0, 0, 2, 8, 0, 1, 0, 0 }, { 0, 0, 0, 0, 0, 0, 1, 1 } };
        using var stats = StatsOf(x);
        // Scores 3, 4, 3, 2 | 5, 6, 7, 8.
        using var weight = Matrix(new float[,] { { 3, -1, 1.5f, 0.25f, 5, -6, 7, 8 } });

        var mask = Wanda.MaskNm(weight, stats, NmPattern.Parse("2:4"));

        // Group 0: 2 (c3), then the tie of 3s goes to c0. Group 1: 5 (c4) and 6 (c5).
        Assert.Equal([true, false, false, true, true, true, false, false], mask.ToBools());

        // With c1 and c2 already masked, group 0 already holds two; group 1 as before.
        var cumulative = Wanda.MaskNm(weight, stats, new NmPattern(2, 4), Mask(false, true, true, false, false, false, false, false));
        Assert.Equal([false, true, true, false, true, true, false, false], cumulative.ToBools());
    }

    [Theory]
    [InlineData(2, 4)]
    [InlineData(4, 8)]
    [InlineData(1, 4)]
    public void NmMasksAreValidInEveryGroup(int n, int m)
    {
        var pattern = new NmPattern(n, m);
        const int rows = 9, cols = 32;
        using var scope = NewDisposeScope();
        using var generator = new Generator(5, CPU);
        var weight = randn([rows, cols], generator: generator);
        using var stats = StatsOf(randn([50, cols], generator: generator), withGram: false);
        var rng = new Random(2);
        var existing = new BitMask(rows * cols);
        for (int i = 0; i < existing.Length; i++) if (rng.NextDouble() < 0.2) existing.Set(i);

        var fresh = Wanda.MaskNm(weight, stats, pattern);
        var cumulative = Wanda.MaskNm(weight, stats, pattern, existing);

        Assert.True(pattern.IsValid(fresh, rows, cols));
        Assert.Equal((long)rows * cols / m * n, fresh.CountSet()); // exactly N in every group
        Assert.True(pattern.IsValid(cumulative, rows, cols));
        AssertContains(cumulative, existing);
    }

    [Fact]
    public void BadInputsAreRefusedByName()
    {
        using var stats = StatsOf(X);
        using var scope = NewDisposeScope();

        var width = Assert.Throws<ArgumentException>(() => Wanda.Mask(zeros(2, 5), stats, 0.5, null, "model.layers.0.mlp.up_proj.weight"));
        Assert.Contains("model.layers.0.mlp.up_proj.weight", width.Message);
        var nan = Assert.Throws<NaNWeightException>(() => Wanda.Mask(tensor(new float[,] { { 1, 2, 3, float.NaN } }), stats, 0.5, null, "q"));
        Assert.Equal(("q", 3L), (nan.TensorName, nan.Index));
        var shape = Assert.Throws<ArgumentException>(() => Wanda.Mask(zeros(4), stats, 0.5, null, "bias"));
        Assert.Contains("'bias'", shape.Message);
        var pattern = Assert.Throws<ArgumentException>(() => Wanda.MaskNm(zeros(2, 4), stats, new NmPattern(3, 8), null, "k_proj"));
        Assert.Contains("k_proj", pattern.Message);
        Assert.Contains("[2, 4]", pattern.Message);
        Assert.Throws<ArgumentException>(() => Wanda.Mask(zeros(2, 4), stats, 0.5, new BitMask(7), "o"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Wanda.Mask(zeros(2, 4), stats, 1.5));
    }

    [Fact]
    public void LeavesNoTensorBehindAndTheWeightAsItWas()
    {
        using var stats = StatsOf(X);
        using var weight = Matrix(W);
        var statistics = DisposeScopeManager.Statistics;
        long before = statistics.ThreadTotalLiveCount;

        _ = Wanda.Mask(weight, stats, 0.5);
        _ = Wanda.MaskNm(weight, stats, new NmPattern(2, 4));

        Assert.Equal(before, statistics.ThreadTotalLiveCount);
        Assert.Equal([3, -1, 1.5f, 0.25f, -0.5f, 0.5f, -4, 0.125f], Values(weight));
    }

    [Fact]
    public void ACountForTheTensorGivesTheFirstRowsOneMore()
    {
        using var stats = StatsOf(X);
        using var weight = Matrix(W);
        // Three of eight: row 0 takes ⌊3/2⌋ + 1 = 2 (2 at column 3, then column 0 of the tie 3, 3), row 1 takes 1 (0.5, column 0).
        var mask = Wanda.MaskCount(weight, stats, 3);
        Assert.Equal([true, false, false, true, true, false, false, false], mask.ToBools());
        Assert.Throws<ArgumentOutOfRangeException>(() => Wanda.MaskCount(weight, stats, 9, tensorName: "q_proj"));
    }

    [Fact]
    public void RandomCountsAreExactAndAgreeWithPerRowSparsity()
    {
        var random = new Random(31);
        for (int trial = 0; trial < 40; trial++)
        {
            int rows = random.Next(1, 9), cols = random.Next(1, 17);
            var w = new float[rows, cols];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) w[r, c] = random.Next(0, 4) == 0 ? random.Next(-2, 3) : (float)(random.NextDouble() * 4 - 2); // ties
            var x = new float[5, cols];
            for (int i = 0; i < 5; i++)
                for (int c = 0; c < cols; c++) x[i, c] = random.Next(0, 3);
            using var stats = StatsOf(x);
            using var weight = Matrix(w);
            long count = random.Next(0, rows * cols + 1);
            var mask = Wanda.MaskCount(weight, stats, count);
            Assert.Equal(count, mask.CountSet());
            for (int r = 0; r < rows; r++)
                Assert.Equal(count / rows + (r < count % rows ? 1 : 0), Enumerable.Range(0, cols).Count(c => mask[r * cols + c]));
            // A count of rows × round(s × cols) is the per-row mask itself.
            double s = random.NextDouble();
            var perRow = Wanda.Mask(weight, stats, s);
            Assert.Equal(perRow.ToBools(), Wanda.MaskCount(weight, stats, rows * Counts.Target(s, cols)).ToBools());
            // Growing counts nest.
            var more = Wanda.MaskCount(weight, stats, Math.Min(rows * cols, count + random.Next(0, 5)), mask);
            Assert.All(Enumerable.Range(0, rows * cols), i => Assert.True(!mask[i] || more[i]));
        }
    }
}
