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

    [Fact]
    public void A_removed_layer_leaves_the_graph_with_its_initializers_and_the_later_layers_are_renumbered()
    {
        var model = miniLm.Model;
        var names = BertWeightNames.FromOnnx(model);
        var edit = EncoderLayerRemoval.Plan(model, names, [1, 2]);
        // Two Identity nodes: layer 1 passes its input on, and layer 2 passes that on in turn.
        var query1 = model.Nodes.Single(n => n.OpType == "MatMul" && n.Inputs[1] == names.Layers[1].Query);
        var output2 = model.Nodes.Single(n => n.OpType == "Add" && n.Inputs.Contains(names.Layers[2].OutputNormBias));
        Assert.Equal(2, edit.Bypasses.Count);
        Assert.Equal(query1.Inputs[0], edit.Bypasses[0].Input);
        Assert.Equal(edit.Bypasses[0].Output, edit.Bypasses[1].Input);
        Assert.Equal(output2.Outputs[0], edit.Bypasses[1].Output);
        // Every tensor of layers 1 and 2 and their shape constants go; none of the other layers'.
        foreach (int l in new[] { 1, 2 })
            Assert.All(names.Layers[l].All, n => Assert.Contains(n, edit.DroppedInitializers));
        foreach (int l in new[] { 0, 3, 4, 5 })
            Assert.All(names.Layers[l].All, n => Assert.DoesNotContain(n, edit.DroppedInitializers));
        Assert.Contains(BertHeadShapes.Find(model, names.Layers[2].Key)!.Value.Heads, edit.DroppedInitializers);
        Assert.Equal(2 * 16 + 2 * 7, edit.DroppedInitializers.Count); // 16 tensors and 3 × 2 + 1 shape constants per layer
        // Layers 3, 4, 5 become 1, 2, 3 (their 10 named tensors each; the MatMul weights have numbers for names).
        Assert.Equal("encoder.layer.1.attention.self.query.bias", edit.Renames["encoder.layer.3.attention.self.query.bias"]);
        Assert.Equal("encoder.layer.3.output.LayerNorm.bias", edit.Renames["encoder.layer.5.output.LayerNorm.bias"]);
        Assert.Equal(3 * 10, edit.Renames.Count);
        Assert.DoesNotContain(edit.Renames.Keys, n => n.StartsWith("encoder.layer.0.", StringComparison.Ordinal));
        // The nodes that go are those of the two layers: none of the embeddings', the mask's or the pooler's.
        Assert.DoesNotContain(model.Nodes.Select((n, i) => (n, i)).Where(x => x.n.Outputs.Contains("last_hidden_state")).Select(x => x.i).Single(), edit.DroppedNodes);
        Assert.True(edit.DroppedNodes.Count is > 2 * 80 and < 2 * 130, $"{edit.DroppedNodes.Count} nodes dropped");

        // The last layer's output is the graph's: its Identity writes last_hidden_state, and nothing is renamed.
        var last = EncoderLayerRemoval.Plan(model, names, [5]);
        Assert.Equal("last_hidden_state", last.Bypasses.Single().Output);
        Assert.Empty(last.Renames);
    }
}
