using Shears.Pruning.Encoders;
using Shears.Pruning.Structured;
using Shears.Pruning.Tests.Onnx;

namespace Shears.Pruning.Tests.Structured;

/// <summary>The removal plan of a BERT-family ONNX encoder, on all-MiniLM-L6-v2's graph (12 heads of 32 per layer, FFN 1536).</summary>
public class EncoderRemovalTests(MiniLmFixture miniLm) : IClassFixture<MiniLmFixture>
{
    private BertLayerNames Layer(int l) => BertWeightNames.FromOnnx(miniLm.Model).Layers[l];

    private static int[] Columns(params int[] heads) => heads.SelectMany(h => Enumerable.Range(h * 32, 32)).ToArray();

    /// <summary>The cuts the shards would report for layer <paramref name="l"/> losing <paramref name="heads"/>: q/k/v columns, attention-output rows.</summary>
    private TensorCut[] HeadCuts(int l, int[] q, int[]? k = null, int[]? o = null)
    {
        var layer = Layer(l);
        return
        [
            new(layer.Query, 1, Columns(q)), new(layer.Key, 1, Columns(k ?? q)), new(layer.Value, 1, Columns(q)), new(layer.AttentionOutput, 0, Columns(o ?? q)),
        ];
    }

    [Fact]
    public void A_removed_head_takes_its_slices_biases_and_shape_constants_with_it()
    {
        var plan = EncoderRemoval.Plan(miniLm.Model, HeadCuts(2, [3, 7]));
        var layer = Layer(2);
        var cut = plan.Cuts.ToDictionary(c => c.Tensor);
        foreach (string name in new[] { layer.Query, layer.Key, layer.Value, layer.QueryBias, layer.KeyBias, layer.ValueBias, layer.AttentionOutput })
            Assert.Equal(Columns(3, 7), cut[name].Removed);
        Assert.Equal((1, 0, 0), (cut[layer.Query].Axis, cut[layer.QueryBias].Axis, cut[layer.AttentionOutput].Axis));
        Assert.Equal([3, 7], plan.Layers[2].Heads);
        Assert.All(plan.Layers.Where(x => x.Layer != 2), x => Assert.Empty(x.Heads));
        // Three Reshapes to [batch, length, 10, 32] and one back to [batch, length, 320]; the head width stays.
        var split = new[] { layer.Query, layer.Key, layer.Value }.Select(w => BertHeadShapes.Find(miniLm.Model, w)!.Value).ToArray();
        Assert.Equal(4, plan.Scalars.Count);
        Assert.All(split, s => Assert.Equal(10, plan.Scalars[s.Heads]));
        Assert.All(split, s => Assert.False(plan.Scalars.ContainsKey(s.HeadDim)));
        Assert.Equal(320, plan.Scalars[BertHeadShapes.FindMerge(miniLm.Model, layer.AttentionOutput)!]);
        Assert.Empty(plan.Config);
    }

    [Fact]
    public void Partly_masked_heads_stay_and_a_head_must_leave_all_four_weights()
    {
        var layer = Layer(1);
        // 40 query columns cover head 0 and part of head 1: only head 0 leaves.
        var partial = EncoderRemoval.Plan(miniLm.Model,
            [new(layer.Query, 1, Enumerable.Range(0, 40).ToArray()), new(layer.Key, 1, Columns(0, 1)), new(layer.Value, 1, Columns(0)), new(layer.AttentionOutput, 0, Columns(0))]);
        Assert.Equal([0], partial.Layers[1].Heads);
        Assert.Equal(Columns(0), partial.Cuts.Single(c => c.Tensor == layer.Key).Removed);

        var e = Assert.Throws<RemovalException>(() => EncoderRemoval.Plan(miniLm.Model, HeadCuts(1, [0, 5], k: [0])));
        Assert.Contains("head 5", e.Message);
        Assert.Contains(layer.Key, e.Message);
        e = Assert.Throws<RemovalException>(() => EncoderRemoval.Plan(miniLm.Model, HeadCuts(1, [4], o: [])));
        Assert.Contains(layer.AttentionOutput, e.Message);
        e = Assert.Throws<RemovalException>(() => EncoderRemoval.Plan(miniLm.Model, [new(layer.Query, 1, Columns(4))]));
        Assert.Contains("cut together", e.Message);
        e = Assert.Throws<RemovalException>(() => EncoderRemoval.Plan(miniLm.Model, HeadCuts(4, Enumerable.Range(0, 12).ToArray())));
        Assert.Contains("lose all its 12 attention heads", e.Message);
    }

    [Fact]
    public void Neurons_and_heads_leave_together_and_equal_widths_reach_the_config()
    {
        var cuts = new List<TensorCut>();
        for (int l = 0; l < 6; l++)
        {
            var layer = Layer(l);
            cuts.Add(new(layer.Intermediate, 1, [l, 100, 1535]));
            cuts.Add(new(layer.Output, 0, [l, 100, 1535]));
            cuts.AddRange(HeadCuts(l, l % 2 == 0 ? [l] : []));
        }
        var plan = EncoderRemoval.Plan(miniLm.Model, cuts);
        Assert.Equal(1533, plan.Config["intermediate_size"]);
        Assert.False(plan.Config.ContainsKey("num_attention_heads"));
        Assert.Equal([0, 100, 1535], plan.Cuts.Single(c => c.Tensor == Layer(0).IntermediateBias).Removed);
        Assert.Equal([[0], [], [2], [], [4], []], plan.Layers.Select(x => x.Heads).ToArray());
        Assert.Equal(3 * 4, plan.Scalars.Count);

        // A neuron cut out of one FFN weight only is refused, naming the other.
        var layer3 = Layer(3);
        var e = Assert.Throws<RemovalException>(() => EncoderRemoval.Plan(miniLm.Model, [new(layer3.Intermediate, 1, [5]), new(layer3.Output, 0, [6])]));
        Assert.Contains(layer3.Output, e.Message);
    }
}
