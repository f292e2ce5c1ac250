using Shears.Pruning.Encoders;

namespace Shears.Pruning.Structured;

/// <summary>
/// Turns the shards' cuts of a BERT-family ONNX encoder (columns of each FFN-in weight, rows of each FFN-out weight,
/// both stored [in, out]) into the smaller model: each neuron leaves both weights, and the FFN-in bias loses the same
/// elements. Layers may keep different widths (an ONNX graph has no config to hold one); none may keep none.
/// </summary>
public static class EncoderRemoval
{
    public static RemovalPlan Plan(BertWeightNames names, IReadOnlyList<TensorCut> cuts, int intermediateSize)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(cuts);
        var byName = cuts.ToDictionary(c => c.Tensor, StringComparer.Ordinal);
        var all = new List<TensorCut>(cuts);
        var layers = new List<LayerRemoval>();
        var widths = new SortedSet<int>();
        for (int l = 0; l < names.Layers.Count; l++)
        {
            var layer = names.Layers[l];
            if (!byName.TryGetValue(layer.Intermediate, out var inCut))
            {
                if (byName.ContainsKey(layer.Output)) throw new RemovalException($"layer {l}: the FFN-out weight '{layer.Output}' is cut without its FFN-in weight");
                layers.Add(new LayerRemoval(l, [], [], []));
                continue;
            }
            if (inCut.Axis != 1) throw new RemovalException($"layer {l}: the FFN-in weight '{layer.Intermediate}' loses neurons along its columns, not axis {inCut.Axis}");
            if (!byName.TryGetValue(layer.Output, out var outCut) || outCut.Axis != 0 || !outCut.Removed.SequenceEqual(inCut.Removed))
                throw new RemovalException($"layer {l}: the FFN-out weight '{layer.Output}' does not lose the same neurons (rows) as '{layer.Intermediate}' (columns)");
            if (inCut.Removed.Length >= intermediateSize)
                throw new RemovalException($"layer {l} would lose all its {intermediateSize} neurons (use a smaller --sparsity, or --scope layer)");
            all.Add(new TensorCut(layer.IntermediateBias, 0, inCut.Removed));
            widths.Add(intermediateSize - inCut.Removed.Length);
            layers.Add(new LayerRemoval(l, inCut.Removed, [], []));
        }
        // A config.json beside the graph can say the width only when every layer keeps the same.
        var config = new Dictionary<string, int>(StringComparer.Ordinal);
        if (widths.Count == 1) config["intermediate_size"] = widths.Min;
        return new RemovalPlan(all, config, layers);
    }
}
