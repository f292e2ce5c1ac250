using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Neurons;
using Shears.Pruning.Selection;
using Shears.Pruning.Structured;
using Shears.Pruning.Tests.Structured;

namespace Shears.Pruning.Tests.Neurons;

public class NeuronPruningTests
{
    private static NeuronMember[] Mlp(float[] gate, float[] up, float[] down, int neurons, int hidden, TensorDType dtype = TensorDType.F32) =>
    [
        new("gate_proj", StructuredPruningTests.Encode(gate, dtype), dtype, neurons, hidden, StructuredAxis.Rows),
        new("up_proj", StructuredPruningTests.Encode(up, dtype), dtype, neurons, hidden, StructuredAxis.Rows),
        new("down_proj", StructuredPruningTests.Encode(down, dtype), dtype, hidden, neurons, StructuredAxis.Columns),
    ];

    // Three neurons, hidden 2. gate rows [1, -2], [0, 1], [3, 0]; up rows [0, 1], [1, 1], [0, 0];
    // down [[1, 0, 2], [-1, 0.5, 0]], so neuron i's down column is (down[0][i], down[1][i]).
    private static NeuronMember[] Worked() => Mlp([1, -2, 0, 1, 3, 0], [0, 1, 1, 1, 0, 0], [1, 0, 2, -1, 0.5f, 0], 3, 2);

    [Fact]
    public void L1_score_is_the_sum_of_the_group_s_row_and_column_norms()
    {
        // gate 3, 1, 3 + up 1, 2, 0 + down 2, 0.5, 2.
        Assert.Equal([6, 3.5, 5], NeuronPruning.Scores(Worked(), 1));
    }

    [Fact]
    public void L2_and_max_norms_add_per_member()
    {
        var l2 = NeuronPruning.Scores(Worked(), 2);
        Assert.Equal(Math.Sqrt(5) + 1 + Math.Sqrt(2), l2[0], 12);
        Assert.Equal(1 + Math.Sqrt(2) + 0.5, l2[1], 12);
        Assert.Equal(3 + 0 + 2, l2[2], 12);
        Assert.Equal([2 + 1 + 1, 1 + 1 + 0.5, 3 + 0 + 2], NeuronPruning.Scores(Worked(), double.PositiveInfinity));
    }

    [Fact]
    public void Masked_elements_count_as_zero_in_the_next_score()
    {
        var members = Worked();
        var masks = members.Select(m => (BitMask?)new BitMask(m.Rows * m.Cols)).ToArray();
        masks[0]!.Set(1); // gate[0][1] = -2
        Assert.Equal([4, 3.5, 5], NeuronPruning.Scores(members, 1, masks));
    }

    [Fact]
    public void Masking_a_neuron_zeroes_its_rows_and_its_column()
    {
        var members = Worked();
        var masks = members.Select(m => new BitMask(m.Rows * m.Cols)).ToArray();
        for (int m = 0; m < 3; m++) NeuronPruning.Mask(members[m], masks[m], [1]);
        Assert.Equal([2L, 3L], Set(masks[0]));
        Assert.Equal([2L, 3L], Set(masks[1]));
        Assert.Equal([1L, 4L], Set(masks[2])); // column 1 of the [2, 3] down_proj
        Assert.All(members.Zip(masks), p => Assert.Equal([1], NeuronPruning.Pruned(p.First, p.Second)));
    }

    [Fact]
    public void Members_with_different_neuron_counts_are_refused_naming_the_tensor()
    {
        var members = Worked();
        members[2] = members[2] with { Name = "model.layers.0.mlp.down_proj.weight", Rows = 3, Cols = 2 };
        var e = Assert.Throws<ArgumentException>(() => NeuronPruning.Scores(members, 1));
        Assert.Contains("model.layers.0.mlp.down_proj.weight", e.Message);
        var o = Assert.Throws<ArgumentOutOfRangeException>(() => NeuronPruning.Mask(Worked()[0], new BitMask(6), [3]));
        Assert.Contains("gate_proj", o.Message);
    }

    /// <summary>Random MLPs of a few tied magnitudes: scores equal a plain per-neuron loop, and selection its sort.</summary>
    [Theory]
    [InlineData(1.0, 11)]
    [InlineData(2.0, 12)]
    [InlineData(double.PositiveInfinity, 13)]
    public void Scores_and_selection_match_a_plain_reference_with_ties(double p, int seed)
    {
        var random = new Random(seed);
        float[] levels = [0f, 0.5f, -0.5f, 1f];
        const int layers = 3, neurons = 17, hidden = 2;
        var scores = new List<double[]>();
        for (int l = 0; l < layers; l++)
        {
            float[] Draw(int n) => Enumerable.Range(0, n).Select(_ => levels[random.Next(levels.Length)]).ToArray();
            var (gate, up, down) = (Draw(neurons * hidden), Draw(neurons * hidden), Draw(hidden * neurons));
            var actual = NeuronPruning.Scores(Mlp(gate, up, down, neurons, hidden, TensorDType.BF16), p);
            for (int i = 0; i < neurons; i++)
            {
                var rowG = Enumerable.Range(0, hidden).Select(c => (double)Math.Abs(gate[i * hidden + c]));
                var rowU = Enumerable.Range(0, hidden).Select(c => (double)Math.Abs(up[i * hidden + c]));
                var colD = Enumerable.Range(0, hidden).Select(r => (double)Math.Abs(down[r * neurons + i]));
                double Norm(IEnumerable<double> xs) => p == 1 ? xs.Aggregate(0.0, (a, x) => a + x)
                    : p == 2 ? Math.Sqrt(xs.Aggregate(0.0, (a, x) => a + x * x)) : xs.Max();
                Assert.Equal(Norm(rowG) + Norm(rowU) + Norm(colD), actual[i]);
            }
            scores.Add(actual);
            Assert.True(actual.Distinct().Count() < neurons, "the levels give tied scores");
        }
        foreach (double s in new[] { 0.0, 0.3, 0.5, 1.0 })
        {
            var layerChoice = UnitSelection.SelectLowest(scores[0], s, []);
            var expected = Enumerable.Range(0, neurons).OrderBy(i => scores[0][i]).ThenBy(i => i).Take((int)Math.Round(s * neurons, MidpointRounding.ToEven)).Order();
            Assert.Equal(expected, layerChoice);
            var global = UnitSelection.SelectLowestGlobal(scores, s, []);
            var all = Enumerable.Range(0, layers).SelectMany(l => Enumerable.Range(0, neurons).Select(i => (l, i)))
                .OrderBy(x => scores[x.l][x.i]).ThenBy(x => x.l).ThenBy(x => x.i).Take((int)Math.Round(s * layers * neurons, MidpointRounding.ToEven)).Order();
            Assert.Equal(all, global);
        }
    }

    private static long[] Set(BitMask mask) => Enumerable.Range(0, (int)mask.Length).Where(i => mask[i]).Select(i => (long)i).ToArray();
}
