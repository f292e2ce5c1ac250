using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;

namespace Shears.Pruning.Structured;

/// <summary>A layer's removed units: MLP neurons and attention (query) heads, by index in the input model.</summary>
public sealed record LayerRemoval(int Layer, int[] Neurons, int[] Heads, int[] KeyValueHeads)
{
    /// <summary>The whole layer is removed.</summary>
    public bool Removed { get; init; }
}

/// <summary>A LLaMA-family removal checked whole: every tensor's cut, the config's new sizes, and each layer's units.</summary>
public sealed record RemovalPlan(IReadOnlyList<TensorCut> Cuts, IReadOnlyDictionary<string, int> Config, IReadOnlyList<LayerRemoval> Layers)
{
    /// <summary>Whole layers removed (by index in the input); the layers after them are renumbered.</summary>
    public IReadOnlyList<int> RemovedLayers { get; init; } = [];

    /// <summary>ONNX: one-element int64 shape constants (by initializer name) given new values, such as a Reshape's head count.</summary>
    public IReadOnlyDictionary<string, long> Scalars { get; init; } = new Dictionary<string, long>();
}

/// <summary>A removal the smaller model's config.json cannot describe, naming the field.</summary>
public sealed class RemovalException(string message) : Exception(message);

/// <summary>
/// Turns the shards' cuts of a LLaMA-family checkpoint (rows of gate/up/q/k/v, columns of down/o) into the smaller
/// model: checks that each neuron and head leaves all the tensors it touches, and that the config's single
/// <c>intermediate_size</c>, <c>num_attention_heads</c> and <c>num_key_value_heads</c> hold for every layer (with every
/// key/value head serving the same number of query heads), and adds the cuts of the biases that follow a weight's rows.
/// </summary>
public static class LlamaRemoval
{
    public static RemovalPlan Plan(CheckpointManifest manifest, LlamaConfig config, IReadOnlyList<TensorCut> cuts)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(cuts);
        var byName = cuts.ToDictionary(c => c.Tensor, StringComparer.Ordinal);
        var all = new List<TensorCut>(cuts);
        var layers = new List<LayerRemoval>();
        var intermediate = new SortedSet<int>();
        var heads = new SortedSet<int>();
        var kvHeads = new SortedSet<int>();
        int d = config.HeadDim;
        var removedLayers = new List<int>();
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            if (WholeLayer(manifest, byName, p))
            {
                // Every matrix of the block gone: its residual stream passes on, and the block leaves the model.
                removedLayers.Add(l);
                all.RemoveAll(c => c.Tensor.StartsWith(p, StringComparison.Ordinal));
                if (manifest.TryGet(p + "self_attn.o_proj.bias", out _) || manifest.TryGet(p + "mlp.down_proj.bias", out _))
                    throw new RemovalException($"layer {l}: o_proj or down_proj has a bias, so masking its matrices does not bypass the layer");
                layers.Add(new LayerRemoval(l, [], [], []) { Removed = true });
                continue;
            }
            int[]? Removed(string suffix, int axis)
            {
                if (!byName.TryGetValue(p + suffix, out var cut)) return null;
                if (cut.Axis != axis) throw new RemovalException($"tensor '{cut.Tensor}' is cut along axis {cut.Axis}, not {axis}");
                return cut.Removed;
            }
            int[] neurons = [], qHeads = [], kv = [];
            var gate = Removed("mlp.gate_proj.weight", 0);
            if (gate is not null)
            {
                foreach (var (suffix, axis) in new[] { ("mlp.up_proj.weight", 0), ("mlp.down_proj.weight", 1) })
                    if (Removed(suffix, axis) is not { } other || !other.SequenceEqual(gate))
                        throw new RemovalException($"layer {l}: '{p + suffix}' does not lose the same neurons as '{p}mlp.gate_proj.weight'");
                neurons = gate;
                intermediate.Add(config.IntermediateSize - neurons.Length);
                AddBiasCut(manifest, all, p + "mlp.gate_proj", gate);
                AddBiasCut(manifest, all, p + "mlp.up_proj", gate);
            }
            var q = Removed("self_attn.q_proj.weight", 0);
            if (q is not null)
            {
                var o = Removed("self_attn.o_proj.weight", 1) ?? throw new RemovalException($"layer {l}: '{p}self_attn.o_proj.weight' must be pruned with its q_proj");
                if (!o.SequenceEqual(q)) throw new RemovalException($"layer {l}: o_proj loses other columns than q_proj loses rows");
                qHeads = WholeHeads(q, d, p + "self_attn.q_proj.weight");
                var k = Removed("self_attn.k_proj.weight", 0) ?? [];
                var v = Removed("self_attn.v_proj.weight", 0) ?? [];
                if (!k.SequenceEqual(v)) throw new RemovalException($"layer {l}: k_proj and v_proj lose different rows");
                kv = WholeHeads(k, d, p + "self_attn.k_proj.weight");
                CheckGroups(l, config, qHeads, kv);
                heads.Add(config.NumAttentionHeads - qHeads.Length);
                kvHeads.Add(config.NumKeyValueHeads - kv.Length);
                AddBiasCut(manifest, all, p + "self_attn.q_proj", q);
                AddBiasCut(manifest, all, p + "self_attn.k_proj", k);
                AddBiasCut(manifest, all, p + "self_attn.v_proj", v);
            }
            layers.Add(new LayerRemoval(l, neurons, qHeads, kv));
        }
        var fields = new Dictionary<string, int>(StringComparer.Ordinal);
        Single(fields, "intermediate_size", intermediate, config.IntermediateSize);
        Single(fields, "num_attention_heads", heads, config.NumAttentionHeads);
        Single(fields, "num_key_value_heads", kvHeads, config.NumKeyValueHeads);
        // The attention width no longer follows from hidden_size once heads are gone.
        if (fields.ContainsKey("num_attention_heads")) fields["head_dim"] = d;
        if (removedLayers.Count > 0)
        {
            if (removedLayers.Count == config.NumHiddenLayers) throw new RemovalException("every layer would be removed: num_hidden_layers would be 0 (use a smaller --sparsity)");
            fields["num_hidden_layers"] = config.NumHiddenLayers - removedLayers.Count;
        }
        return new RemovalPlan(all, fields, layers) { RemovedLayers = removedLayers };
    }

    private static readonly string[] BlockMatrices =
    [
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    ];

    /// <summary>Whether all seven matrices of the block are cut whole (every row, or every column).</summary>
    private static bool WholeLayer(CheckpointManifest manifest, Dictionary<string, TensorCut> cuts, string prefix) =>
        BlockMatrices.All(m => cuts.TryGetValue(prefix + m, out var cut) && manifest.TryGet(cut.Tensor, out var t) && cut.Removed.Length == t.Shape[cut.Axis]);

    /// <summary>The name of a tensor in the output once <paramref name="removedLayers"/> are gone: null for a tensor of a removed layer, the later layers renumbered.</summary>
    public static string? Renamed(string tensor, IReadOnlyList<int> removedLayers)
    {
        if (removedLayers.Count == 0 || !tensor.StartsWith("model.layers.", StringComparison.Ordinal)) return tensor;
        int start = "model.layers.".Length, end = tensor.IndexOf('.', start);
        if (end < 0 || !int.TryParse(tensor.AsSpan(start, end - start), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int layer)) return tensor;
        if (removedLayers.Contains(layer)) return null;
        return $"model.layers.{layer - removedLayers.Count(r => r < layer)}{tensor[end..]}";
    }

    /// <summary>The heads whose every row is removed; refuses a head removed in part.</summary>
    private static int[] WholeHeads(int[] rows, int headDim, string tensor)
    {
        var set = rows.ToHashSet();
        var whole = rows.Select(r => r / headDim).Distinct().Order().ToArray();
        foreach (int h in whole)
            for (int r = h * headDim; r < (h + 1) * headDim; r++)
                if (!set.Contains(r)) throw new RemovalException($"tensor '{tensor}': head {h} loses some of its {headDim} rows but not all");
        return whole;
    }

    /// <summary>Every key/value head left must serve the same number of query heads, and a removed one none.</summary>
    private static void CheckGroups(int layer, LlamaConfig config, int[] qHeads, int[] kv)
    {
        int group = config.KeyValueGroups;
        var removedQ = qHeads.ToHashSet();
        var removedKv = kv.ToHashSet();
        var left = new SortedSet<int>();
        for (int g = 0; g < config.NumKeyValueHeads; g++)
        {
            int kept = Enumerable.Range(g * group, group).Count(h => !removedQ.Contains(h));
            if (removedKv.Contains(g))
            {
                if (kept > 0) throw new RemovalException($"layer {layer}: key/value head {g} is removed while {kept} of its query heads remain");
                continue;
            }
            left.Add(kept);
        }
        if (left.Count > 1 || left.Contains(0))
            throw new RemovalException(
                $"layer {layer}: the key/value heads left would serve {string.Join(" and ", left)} query heads; num_key_value_heads needs every group of equal size " +
                "(prune heads so that each group loses as many, or whole groups)");
    }

    private static void AddBiasCut(CheckpointManifest manifest, List<TensorCut> cuts, string module, int[] removed)
    {
        if (manifest.TryGet(module + ".bias", out var bias) && bias.Shape.Length == 1) cuts.Add(new TensorCut(bias.Name, 0, removed));
    }

    /// <summary>The one value all layers keep, written when it differs from the input's <paramref name="original"/>.</summary>
    private static void Single(Dictionary<string, int> fields, string field, SortedSet<int> values, int original)
    {
        if (values.Count == 0) return;
        if (values.Count > 1)
            throw new RemovalException($"the layers would keep {string.Join(", ", values)} units: config.json's {field} is one number for every layer (use --scope layer)");
        if (values.Min == 0) throw new RemovalException($"every unit of a layer would be removed: {field} would be 0 (use a smaller --sparsity)");
        if (values.Min != original) fields[field] = values.Min;
    }

}
