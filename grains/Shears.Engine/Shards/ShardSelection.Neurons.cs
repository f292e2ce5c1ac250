using Shears.Pruning.Neurons;
using Shears.Pruning.Structured;

namespace Shears.Engine.Shards;

// The MLP neurons the shard holds: each neuron's group is row i of gate_proj and up_proj and column i of down_proj.
public sealed partial class ShardSelection
{
    private const string Gate = "mlp.gate_proj.weight", Up = "mlp.up_proj.weight", Down = "mlp.down_proj.weight";

    /// <summary>The tensor an MLP layer is named by (its gate_proj weight), for a member tensor of the layer; null for other tensors.</summary>
    public static string? NeuronLayerOf(string tensor)
    {
        foreach (string suffix in new[] { Gate, Up, Down })
            if (tensor.EndsWith(suffix, StringComparison.Ordinal)) return tensor[..^suffix.Length] + Gate;
        return null;
    }

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

    /// <summary>The shard's MLP layers with their members in group order (gate, up, down); every member must lie here.</summary>
    private IEnumerable<(string Name, (LoadedPiece Piece, NeuronMember Member)[] Members)> MlpLayers()
    {
        foreach (var gate in Pieces.Where(p => p.Entry.Name.EndsWith(Gate, StringComparison.Ordinal)))
        {
            string prefix = gate.Entry.Name[..^Gate.Length];
            (LoadedPiece, NeuronMember) Member(string suffix, StructuredAxis axis)
            {
                var piece = Pieces.FirstOrDefault(p => p.Entry.Name == prefix + suffix)
                    ?? throw new InvalidOperationException($"--pattern neurons: tensor '{prefix + suffix}' must be pruned with '{gate.Entry.Name}'");
                if (piece.Piece.RowStart != 0 || piece.Piece.RowCount != piece.Entry.Shape[0])
                    throw new InvalidOperationException($"--pattern neurons: tensor '{piece.Entry.Name}' must lie whole on one shard");
                return (piece, new NeuronMember(piece.Entry.Name, piece.Writable(), piece.Entry.DType, piece.Rows, piece.Cols, axis));
            }
            yield return (gate.Entry.Name, [Member(Gate, StructuredAxis.Rows), Member(Up, StructuredAxis.Rows), Member(Down, StructuredAxis.Columns)]);
        }
        foreach (var orphan in Pieces.Where(p => NeuronLayerOf(p.Entry.Name) is { } layer && !Pieces.Any(q => q.Entry.Name == layer)))
            throw new InvalidOperationException($"--pattern neurons: tensor '{orphan.Entry.Name}' must be pruned with '{NeuronLayerOf(orphan.Entry.Name)}'");
    }
}
