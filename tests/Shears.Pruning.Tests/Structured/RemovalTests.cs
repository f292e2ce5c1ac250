using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Models;
using Shears.Pruning.Structured;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Structured;

public class RemovalTests
{
    private static byte[] Bytes(params short[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    [Theory]
    // Four layers, full attention in 0 and 1, sliding windows in 2 and 3; removed layers → the config's per-layer fields.
    [InlineData(new[] { 1 }, 1, "full_attention,sliding_attention,sliding_attention")]
    [InlineData(new[] { 3 }, 2, "full_attention,full_attention,sliding_attention")]
    [InlineData(new[] { 0, 2 }, 1, "full_attention,sliding_attention")]
    [InlineData(new int[0], 2, "full_attention,full_attention,sliding_attention,sliding_attention")]
    public void Removed_layers_take_their_entries_out_of_the_per_layer_config_fields(int[] removed, int maxWindowLayers, string layerTypes)
    {
        const string json = """
            {"model_type": "qwen2", "num_hidden_layers": 4, "max_window_layers": 2, "sliding_window": 8, "use_sliding_window": true,
             "layer_types": ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]}
            """;
        var edited = System.Text.Json.Nodes.JsonNode.Parse(RemovedLayout.EditConfig(json,
            new Dictionary<string, int> { ["num_hidden_layers"] = 4 - removed.Length }, "config.json", removed))!;

        Assert.Equal(4 - removed.Length, (int)edited["num_hidden_layers"]!);
        Assert.Equal(maxWindowLayers, (int)edited["max_window_layers"]!);
        Assert.Equal(layerTypes, string.Join(',', edited["layer_types"]!.AsArray().Select(t => (string)t!)));
        Assert.Equal(8, (int)edited["sliding_window"]!);
        // The edited config describes the same attention for every kept layer.
        var config = LlamaConfig.Parse(edited.ToJsonString().Replace("{", """{"hidden_size": 16, "intermediate_size": 8, "num_attention_heads": 2, "vocab_size": 4, """, StringComparison.Ordinal));
        var kept = Enumerable.Range(0, 4).Except(removed).ToArray();
        for (int j = 0; j < kept.Length; j++) Assert.Equal(kept[j] >= 2 ? 8 : null, config.WindowOf(j));
    }

    [Fact]
    public void A_cut_drops_rows_or_columns_by_hand()
    {
        // [3, 4] of 2-byte elements 0..11.
        var bytes = Bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
        var rows = new TensorCut("t", 0, [1]);
        Assert.Equal([2L, 4], rows.Shape([3, 4]));
        Assert.Equal(Bytes(0, 1, 2, 3, 8, 9, 10, 11), rows.Apply(bytes, [3, 4], 2));
        var cols = new TensorCut("t", 1, [0, 2]);
        Assert.Equal([3L, 2], cols.Shape([3, 4]));
        Assert.Equal(Bytes(1, 3, 5, 7, 9, 11), cols.Apply(bytes, [3, 4], 2));
        var last = new TensorCut("t", 1, [3]);
        Assert.Equal(Bytes(0, 1, 2, 4, 5, 6, 8, 9, 10), last.Apply(bytes, [3, 4], 2));
        Assert.Equal(Bytes(0, 2), new TensorCut("b", 0, [1]).Apply(Bytes(0, 1, 2), [3], 2));
        Assert.Throws<ArgumentException>(() => new TensorCut("t", 0, [2, 1]).Shape([3, 4]));
        Assert.Throws<ArgumentException>(() => new TensorCut("t", 1, [4]).Shape([3, 4]));
    }

    [Fact]
    public void Wholly_masked_slices_are_found_along_either_axis()
    {
        var mask = new BitMask(12);
        mask.SetRange(4, 4); // row 1
        foreach (int r in new[] { 0, 2 }) mask.Set(r * 4 + 3); // column 3 with row 1
        Assert.Equal([1], TensorCut.WhollyMasked(mask, 3, 4, 0));
        Assert.Equal([3], TensorCut.WhollyMasked(mask, 3, 4, 1));
    }

    private static CheckpointManifest Manifest(TempDir dir)
    {
        DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(HiddenSize: 32, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 8, VocabSize: 64));
        return CheckpointReader.ReadManifest(dir.Path);
    }

    private static TensorCut[] Neurons(int layer, int[] gate, int[]? down = null) =>
    [
        new($"model.layers.{layer}.mlp.gate_proj.weight", 0, gate), new($"model.layers.{layer}.mlp.up_proj.weight", 0, gate),
        new($"model.layers.{layer}.mlp.down_proj.weight", 1, down ?? gate),
    ];

    [Fact]
    public void Neurons_removed_alike_in_every_layer_give_the_config_its_new_size()
    {
        using var dir = new TempDir();
        var manifest = Manifest(dir);
        var config = LlamaConfig.Load(dir.Path);
        var plan = LlamaRemoval.Plan(manifest, config, [.. Neurons(0, [1, 5]), .. Neurons(1, [0, 7])]);
        Assert.Equal(6, plan.Config["intermediate_size"]);
        Assert.False(plan.Config.ContainsKey("num_attention_heads"));
        Assert.Equal([1, 5], plan.Layers[0].Neurons);
        var layout = RemovedLayout.Plan(manifest, plan.Cuts);
        Assert.Equal([6L, 32], layout.Output("model.layers.1.mlp.up_proj.weight")!.Shape);
        // Two layers, three tensors, two neurons of 32 bf16 elements each.
        Assert.Equal(manifest.Tensors.Sum(t => t.ByteLength) - 2 * 3 * 2 * 32 * 2, layout.TotalTensorBytes);
    }

    [Fact]
    public void Removals_the_config_cannot_describe_name_the_field()
    {
        using var dir = new TempDir();
        var manifest = Manifest(dir);
        var config = LlamaConfig.Load(dir.Path);
        var unequal = Assert.Throws<RemovalException>(() => LlamaRemoval.Plan(manifest, config, [.. Neurons(0, [1, 5]), .. Neurons(1, [0])]));
        Assert.Contains("intermediate_size", unequal.Message);
        var uncoupled = Assert.Throws<RemovalException>(() => LlamaRemoval.Plan(manifest, config, Neurons(0, [1], [2])));
        Assert.Contains("down_proj", uncoupled.Message);
        // Layer 0 loses query heads 0 and 1: key/value group 0 keeps none while its key/value head stays.
        int d = 8;
        TensorCut[] Heads(int layer, int[] q, int[] kv) =>
        [
            new($"model.layers.{layer}.self_attn.q_proj.weight", 0, q.SelectMany(h => Enumerable.Range(h * d, d)).ToArray()),
            new($"model.layers.{layer}.self_attn.k_proj.weight", 0, kv.SelectMany(h => Enumerable.Range(h * d, d)).ToArray()),
            new($"model.layers.{layer}.self_attn.v_proj.weight", 0, kv.SelectMany(h => Enumerable.Range(h * d, d)).ToArray()),
            new($"model.layers.{layer}.self_attn.o_proj.weight", 1, q.SelectMany(h => Enumerable.Range(h * d, d)).ToArray()),
        ];
        var groups = Assert.Throws<RemovalException>(() => LlamaRemoval.Plan(manifest, config, [.. Heads(0, [0, 1], []), .. Heads(1, [0, 2], [])]));
        Assert.Contains("num_key_value_heads", groups.Message);
        var balanced = LlamaRemoval.Plan(manifest, config, [.. Heads(0, [1, 3], []), .. Heads(1, [0, 2], [])]);
        Assert.Equal(2, balanced.Config["num_attention_heads"]);
        Assert.False(balanced.Config.ContainsKey("num_key_value_heads")); // unchanged: left as the input has it
        Assert.Equal(d, balanced.Config["head_dim"]);
        var whole = LlamaRemoval.Plan(manifest, config, [.. Heads(0, [0, 1], [0]), .. Heads(1, [2, 3], [1])]);
        Assert.Equal(1, whole.Config["num_key_value_heads"]);
        var partial = Assert.Throws<RemovalException>(() => LlamaRemoval.Plan(manifest, config,
            [new("model.layers.0.self_attn.q_proj.weight", 0, [0, 1]), new("model.layers.0.self_attn.o_proj.weight", 1, [0, 1])]));
        Assert.Contains("head 0", partial.Message);
    }
}
