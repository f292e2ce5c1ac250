using Shears.Pruning.Checkpoints;
using Shears.Pruning.Neurons;
using Shears.Pruning.Structured;

namespace Shears.Engine.Shards;

// The MLP neurons the shard holds: each neuron's group is row i of gate_proj and up_proj and column i of down_proj.
public sealed partial class ShardSelection
{
    private const string Gate = "mlp.gate_proj.weight", Up = "mlp.up_proj.weight", Down = "mlp.down_proj.weight";

    /// <summary>
    /// The tensor an MLP layer is named by (LLaMA: its gate_proj weight; an ONNX encoder: its FFN-in weight), for a member
    /// tensor of the layer; null for other tensors.
    /// </summary>
    public static string? NeuronLayerOf(CheckpointManifest manifest, string tensor)
    {
        if (manifest.Format == CheckpointFormat.Onnx)
        {
            if (!manifest.LayerRoles.TryGetValue(tensor, out var own) || own.Role is not (FfnIn or FfnOut)) return null;
            return manifest.LayerRoles.Where(r => r.Value == (own.Layer, FfnIn)).Select(r => r.Key).FirstOrDefault();
        }
        foreach (string suffix in new[] { Gate, Up, Down })
            if (tensor.EndsWith(suffix, StringComparison.Ordinal)) return tensor[..^suffix.Length] + Gate;
        return null;
    }

    /// <summary>The members of an MLP layer in group order, with the axis along which each holds the neurons.</summary>
    private static (string Tensor, StructuredAxis Axis)[] NeuronMembers(CheckpointManifest manifest, string layer)
    {
        if (manifest.Format != CheckpointFormat.Onnx)
        {
            string prefix = layer[..^Gate.Length];
            return [(prefix + Gate, StructuredAxis.Rows), (prefix + Up, StructuredAxis.Rows), (prefix + Down, StructuredAxis.Columns)];
        }
        // ONNX MatMul weights are stored [in, out]: the FFN-in weight's neurons are its columns, the FFN-out's its rows.
        int index = manifest.LayerRoles[layer].Layer;
        string output = manifest.LayerRoles.Where(r => r.Value == (index, FfnOut)).Select(r => r.Key).FirstOrDefault()
            ?? throw new InvalidOperationException($"--pattern neurons: encoder layer {index} has no FFN-out weight");
        return [(layer, StructuredAxis.Columns), (output, StructuredAxis.Rows)];
    }

    private const string FfnIn = "intermediate", FfnOut = "output";

    private UnitScoreSet NeuronScores()
    {
        var layers = MlpLayers().ToArray();
        return new UnitScoreSet(
            layers.Select(l => l.Name).ToArray(),
            layers.Select(l => NeuronPruning.Scores(l.Members.Select(m => m.Member).ToArray(), Recipe.Norm, l.Members.Select(m => m.Piece.Mask).ToArray())).ToArray(),
            layers.Select(l => NeuronPruning.Pruned(l.Members[0].Member, l.Members[0].Piece.Mask)).ToArray());
    }

    private void PruneNeurons(UnitChoice choice)
    {
        foreach (var layer in MlpLayers())
        {
            if (!choice.Units.TryGetValue(layer.Name, out var neurons) || neurons.Length == 0) continue;
            foreach (var (piece, member) in layer.Members) NeuronPruning.Mask(member, piece.Mask, neurons);
        }
    }

    /// <summary>The shard's MLP layers with their members in group order (gate, up, down; FFN-in, FFN-out); every member must lie here.</summary>
    private IEnumerable<(string Name, (LoadedPiece Piece, NeuronMember Member)[] Members)> MlpLayers()
    {
        var layers = Pieces.Select(p => NeuronLayerOf(Manifest, p.Entry.Name)).OfType<string>().Distinct(StringComparer.Ordinal).ToArray();
        foreach (var piece in Pieces.Where(p => NeuronLayerOf(Manifest, p.Entry.Name) is null))
            throw new InvalidOperationException($"--pattern neurons: tensor '{piece.Entry.Name}' is not part of an MLP layer");
        foreach (string layer in layers)
        {
            var members = NeuronMembers(Manifest, layer).Select(m =>
            {
                var piece = Pieces.FirstOrDefault(p => p.Entry.Name == m.Tensor)
                    ?? throw new InvalidOperationException($"--pattern neurons: tensor '{m.Tensor}' must be pruned with '{layer}'");
                if (piece.Piece.RowStart != 0 || piece.Piece.RowCount != piece.Entry.Shape[0])
                    throw new InvalidOperationException($"--pattern neurons: tensor '{piece.Entry.Name}' must lie whole on one shard");
                return (piece, new NeuronMember(piece.Entry.Name, piece.Writable(), piece.Entry.DType, piece.Rows, piece.Cols, m.Axis));
            }).ToArray();
            yield return (layer, members);
        }
    }
}
