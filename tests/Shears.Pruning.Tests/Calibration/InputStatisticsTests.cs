using Shears.Pruning.Calibration;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Calibration;

public class InputStatisticsTests
{
    // Six input vectors of width 3, handed over as a [2, 2, 3] batch (two sequences of two tokens)
    // and then a [2, 3] batch.
    private static readonly float[,] Inputs =
    {
        { 1, 2, 0 }, { -1, 0, 3 },
        { 0.5f, 1, 1 }, { 2, -2, 0 },
        { 0, 0, 4 }, { 1, 1, 1 },
    };

    [Fact]
    public void SumsOfSquaresGramAndHessianAddUpOverBatches()
    {
        using var stats = new InputStatistics(3, withGram: true);
        using (NewDisposeScope())
        {
            var all = tensor(Inputs);
            stats.Add(all.narrow(0, 0, 4).reshape(2, 2, 3));
            stats.Add(all.narrow(0, 4, 2));
        }

        Assert.Equal(6, stats.Samples);
        // Column sums of squares: 1+1+0.25+4+0+1, 4+0+1+4+0+1, 0+9+1+0+16+1.
        Assert.Equal([7.25, 10, 27], stats.SumOfSquares());
        Assert.Equal([Math.Sqrt(7.25), Math.Sqrt(10), Math.Sqrt(27)], stats.ColumnNorms());

        using var gram = stats.Gram();
        using var hessian = stats.Hessian();
        var g = gram.data<double>().ToArray();
        var h = hessian.data<double>().ToArray();
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
            {
                double expected = 0;
                for (int r = 0; r < 6; r++) expected += (double)Inputs[r, i] * Inputs[r, j];
                Assert.Equal(expected, g[i * 3 + j]);
                Assert.Equal(2 * expected / 6, h[i * 3 + j], 12); // H = 2·XᵀX / n
            }
    }

    [Fact]
    public void MergeEqualsAddingEverythingToOne()
    {
        using var one = CalibrationData.StatsOf(Inputs, withGram: true);
        using var left = new InputStatistics(3, withGram: true);
        using var right = new InputStatistics(3, withGram: true);
        using (NewDisposeScope())
        {
            var all = tensor(Inputs);
            left.Add(all.narrow(0, 0, 1));
            right.Add(all.narrow(0, 1, 5));
        }

        left.Merge(right);

        Assert.Equal(one.Samples, left.Samples);
        Assert.Equal(one.SumOfSquares(), left.SumOfSquares());
        using var a = one.Gram();
        using var b = left.Gram();
        Assert.Equal(a.data<double>().ToArray(), b.data<double>().ToArray());
    }

    [Fact]
    public void BadBatchesAreRefusedAndChangeNothing()
    {
        using var stats = CalibrationData.StatsOf(Inputs, withGram: true);
        var before = stats.SumOfSquares();

        using (NewDisposeScope())
        {
            var wrongWidth = Assert.Throws<ArgumentException>(() => stats.Add(zeros(4, 5)));
            Assert.Contains("[4, 5]", wrongWidth.Message);
            Assert.Contains("3", wrongWidth.Message);
            var nan = Assert.Throws<ArgumentException>(() => stats.Add(tensor(new[] { 1f, float.NaN, 0f })));
            Assert.Contains("NaN", nan.Message);
            Assert.Throws<ArgumentException>(() => stats.Add(tensor(new[] { 1, 2, 3 })));
        }

        Assert.Equal(6, stats.Samples);
        Assert.Equal(before, stats.SumOfSquares());
    }

    [Fact]
    public void WithoutTheGramMatrixThereIsNoHessian()
    {
        using var stats = CalibrationData.StatsOf(Inputs, withGram: false);

        Assert.False(stats.HasGram);
        Assert.Throws<InvalidOperationException>(() => stats.Hessian());
        using var withGram = new InputStatistics(3, withGram: true);
        Assert.Throws<InvalidOperationException>(() => withGram.Hessian()); // no samples yet
        Assert.Throws<ArgumentException>(() => withGram.Merge(stats));
    }

    [Fact]
    public void LeavesNoTensorBehind()
    {
        var statistics = DisposeScopeManager.Statistics;
        long before = statistics.ThreadTotalLiveCount;

        using (var stats = CalibrationData.StatsOf(Inputs, withGram: true))
        {
            _ = stats.ColumnNorms();
        }

        Assert.Equal(before, statistics.ThreadTotalLiveCount);
    }
}
