using Shears.Pruning.Checkpoints;
using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;

namespace Shears.Pruning.Structured;

/// <summary>
/// Turns the shards' cuts of a BERT-family ONNX encoder into the smaller model. The MatMul weights are stored [in, out]:
/// an FFN neuron is a column of the FFN-in weight and a row of the FFN-out weight, and the FFN-in bias loses the same
/// element; an attention head is head_dim columns of the query, key and value weights (and their biases' elements) and
/// the same rows of the attention-output weight, and the graph's shape constants follow: each projection's Reshape to
/// [batch, length, heads, head_dim] gets the layer's new head count, the Reshape back to [batch, length, width] the new
/// width. A layer whose six matrices are all cut whole is removed (<see cref="EncoderLayerRemoval"/> takes it out of the
/// graph). Layers may keep different widths and head counts (an ONNX graph has no config to hold one); none may keep none.
/// </summary>
public static class EncoderRemoval
{
    public static RemovalPlan Plan(OnnxModel model, IReadOnlyList<TensorCut> cuts)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cuts);
        var names = BertWeightNames.FromOnnx(model);
        int headDim = BertConfig.FromOnnx(model, names).HeadDim;
        var byName = cuts.ToDictionary(c => c.Tensor, StringComparer.Ordinal);
        long Width(string weight, int axis) => model.FindInitializer(weight)!.Dims[axis];

        var all = new List<TensorCut>();
        var scalars = new Dictionary<string, long>(StringComparer.Ordinal);
        var layers = new List<LayerRemoval>();
        var widths = new SortedSet<long>();
        var removedLayers = new List<int>();
        for (int l = 0; l < names.Layers.Count; l++)
        {
            var layer = names.Layers[l];
            if (WholeLayer(model, layer, byName))
            {
                // --pattern layers: every matrix masked whole; the graph passes the layer's input on (OnnxLayerRemoval).
                removedLayers.Add(l);
                layers.Add(new LayerRemoval(l, [], [], []) { Removed = true });
                continue;
            }
            var neurons = Neurons(l, layer, byName, Width(layer.Intermediate, 1), all);
            widths.Add(Width(layer.Intermediate, 1) - neurons.Length);
            var heads = Heads(model, l, layer, byName, checked((int)(Width(layer.Query, 1) / headDim)), headDim, all, scalars);
            layers.Add(new LayerRemoval(l, neurons, heads, heads));
        }
        if (removedLayers.Count >= names.Layers.Count)
            throw new RemovalException($"every one of the {names.Layers.Count} encoder layers would be removed");
        var known = all.Select(c => c.Tensor).Concat(removedLayers.SelectMany(l => names.Layers[l].Matrices)).ToHashSet(StringComparer.Ordinal);
        foreach (var cut in cuts.Where(c => !known.Contains(c.Tensor) && c.Removed.Length > 0))
            throw new RemovalException($"tensor '{cut.Tensor}' loses slices but is not part of an FFN neuron or attention head of the encoder");

        // A config.json beside the graph can say the FFN width only when every layer keeps the same. Its head count is
        // left alone: Hugging Face's BERT config derives the head width as hidden_size / num_attention_heads, which a
        // removal of heads keeps (the graph's shape constants and the report say what each layer kept).
        var config = new Dictionary<string, int>(StringComparer.Ordinal);
        if (widths.Count == 1 && layers.Any(x => x.Neurons.Length > 0)) config["intermediate_size"] = (int)widths.Min;
        if (removedLayers.Count > 0) config["num_hidden_layers"] = names.Layers.Count - removedLayers.Count;
        return new RemovalPlan(all, config, layers) { Scalars = scalars, RemovedLayers = removedLayers };
    }

    /// <summary>Whether all six matrices of the layer lose every slice: the query, key, value, FFN-in columns and the attention-output, FFN-out rows.</summary>
    private static bool WholeLayer(OnnxModel model, BertLayerNames layer, Dictionary<string, TensorCut> byName)
    {
        foreach (var (name, axis) in new[] { (layer.Query, 1), (layer.Key, 1), (layer.Value, 1), (layer.AttentionOutput, 0), (layer.Intermediate, 1), (layer.Output, 0) })
            if (!byName.TryGetValue(name, out var cut) || cut.Axis != axis || cut.Removed.Length != model.FindInitializer(name)!.Dims[axis])
                return false;
        return true;
    }

    /// <summary>Layer <paramref name="l"/>'s removed FFN neurons: the FFN-in columns, FFN-out rows and FFN-in bias elements cut together.</summary>
    private static int[] Neurons(int l, BertLayerNames layer, Dictionary<string, TensorCut> byName, long width, List<TensorCut> all)
    {
        byName.TryGetValue(layer.Intermediate, out var inCut);
        byName.TryGetValue(layer.Output, out var outCut);
        if (inCut is null && outCut is null) return [];
        if (inCut is null) throw new RemovalException($"layer {l}: the FFN-out weight '{layer.Output}' is cut without its FFN-in weight");
        if (inCut.Axis != 1) throw new RemovalException($"layer {l}: the FFN-in weight '{layer.Intermediate}' loses neurons along its columns, not axis {inCut.Axis}");
        if (outCut is null || outCut.Axis != 0 || !outCut.Removed.SequenceEqual(inCut.Removed))
            throw new RemovalException($"layer {l}: the FFN-out weight '{layer.Output}' does not lose the same neurons (rows) as '{layer.Intermediate}' (columns)");
        if (inCut.Removed.Length >= width)
            throw new RemovalException($"layer {l} would lose all its {width} neurons (use a smaller --sparsity, or --scope layer)");
        all.Add(inCut);
        all.Add(outCut);
        all.Add(new TensorCut(layer.IntermediateBias, 0, inCut.Removed));
        return inCut.Removed;
    }

    /// <summary>
    /// Layer <paramref name="l"/>'s removed heads: those whose every query column is cut, which the key, value and
    /// attention-output cuts must hold too; exactly their slices are cut, with the shape constants that name the heads.
    /// </summary>
    private static int[] Heads(OnnxModel model, int l, BertLayerNames layer, Dictionary<string, TensorCut> byName, int heads, int headDim,
        List<TensorCut> all, Dictionary<string, long> scalars)
    {
        var parts = new[] { (layer.Query, 1), (layer.Key, 1), (layer.Value, 1), (layer.AttentionOutput, 0) }
            .Select(p => (Name: p.Item1, Axis: p.Item2, Cut: byName.GetValueOrDefault(p.Item1))).ToArray();
        if (parts.All(p => p.Cut is null)) return [];
        foreach (var p in parts)
        {
            if (p.Cut is null) throw new RemovalException($"layer {l}: the attention weight '{p.Name}' has no cut while '{parts.First(x => x.Cut is not null).Name}' has one; a head's four weights are cut together");
            if (p.Cut.Axis != p.Axis) throw new RemovalException($"layer {l}: the attention weight '{p.Name}' loses heads along axis {p.Axis}, not axis {p.Cut.Axis}");
        }
        var sets = parts.Select(p => p.Cut!.Removed.ToHashSet()).ToArray();
        bool Whole(HashSet<int> set, int h) => Enumerable.Range(h * headDim, headDim).All(set.Contains);
        var removed = Enumerable.Range(0, heads).Where(h => Whole(sets[0], h)).ToArray();
        foreach (var (p, set) in parts.Zip(sets).Skip(1))
            foreach (int h in removed.Where(h => !Whole(set, h)))
                throw new RemovalException($"layer {l}: head {h} leaves the query weight '{layer.Query}' but not '{p.Name}'");
        if (removed.Length == 0) return [];
        if (removed.Length >= heads)
            throw new RemovalException($"layer {l} would lose all its {heads} attention heads (use a smaller --sparsity, or --scope layer)");

        var slices = removed.SelectMany(h => Enumerable.Range(h * headDim, headDim)).ToArray();
        foreach (var (name, axis, _) in parts) all.Add(new TensorCut(name, axis, slices));
        foreach (string bias in new[] { layer.QueryBias, layer.KeyBias, layer.ValueBias }) all.Add(new TensorCut(bias, 0, slices));

        long kept = heads - removed.Length;
        foreach (string weight in new[] { layer.Query, layer.Key, layer.Value })
        {
            var shape = BertHeadShapes.Find(model, weight)
                ?? throw new RemovalException($"layer {l}: the projection '{weight}' does not lead to a Reshape to [batch, length, heads, head_dim] whose head count could be rewritten");
            Scalar(model, l, shape.Heads, kept, scalars);
        }
        string width = BertHeadShapes.FindMerge(model, layer.AttentionOutput)
            ?? throw new RemovalException($"layer {l}: the attention output '{layer.AttentionOutput}' does not read a Reshape to [batch, length, width] whose width could be rewritten");
        Scalar(model, l, width, kept * headDim, scalars);
        return removed;
    }

    /// <summary>A one-element int64 shape constant given a new value; one that another node also reads cannot change for this layer alone.</summary>
    private static void Scalar(OnnxModel model, int l, string name, long value, Dictionary<string, long> scalars)
    {
        int readers = model.Nodes.Count(n => n.Inputs.Contains(name));
        if (readers != 1)
            throw new RemovalException($"layer {l}: the shape constant '{name}' is read by {readers} nodes; a head removal rewrites it for one layer only");
        if (!scalars.TryAdd(name, value) && scalars[name] != value)
            throw new RemovalException($"layer {l}: the shape constant '{name}' would need two values ({scalars[name]} and {value})");
    }
}
