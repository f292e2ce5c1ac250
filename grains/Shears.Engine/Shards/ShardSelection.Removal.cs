using Shears.Pruning.Checkpoints;
using Shears.Pruning.Structured;

namespace Shears.Engine.Shards;

// --remove: which slices of the shard's tensors are wholly masked structured units, and so leave the output.
public sealed partial class ShardSelection
{
    private static readonly (string Suffix, int Axis)[] RemovalAxes =
    [
        ("mlp.gate_proj.weight", 0), ("mlp.up_proj.weight", 0), ("mlp.down_proj.weight", 1),
        ("self_attn.q_proj.weight", 0), ("self_attn.k_proj.weight", 0), ("self_attn.v_proj.weight", 0), ("self_attn.o_proj.weight", 1),
    ];

    /// <summary>
    /// The axis along which a LLaMA-family tensor loses its removed units: output rows of gate/up/q/k/v, input columns
    /// of down/o; null for a tensor that is not part of a neuron or head.
    /// </summary>
    public static int? RemovalAxis(string tensor)
    {
        foreach (var (suffix, axis) in RemovalAxes)
            if (tensor.EndsWith(suffix, StringComparison.Ordinal)) return axis;
        return null;
    }

    /// <summary>
    /// Per piece, the slices of its tensor that a structured pattern masked whole (rows or columns by the tensor's role,
    /// or for an ONNX weight stored [in, out] the other way round): what --remove drops. Pieces are whole tensors.
    /// </summary>
    public IReadOnlyList<TensorCut> RemovalCuts(Func<string, int?> axisOf)
    {
        var cuts = new List<TensorCut>();
        foreach (var piece in Pieces)
        {
            if (piece.Piece.RowStart != 0 || piece.Piece.RowCount != piece.Entry.Shape[0])
                throw new InvalidOperationException($"--remove: tensor '{piece.Entry.Name}' is split over shards; structured patterns keep tensors whole");
            int axis = axisOf(piece.Entry.Name)
                ?? throw new InvalidOperationException($"--remove: tensor '{piece.Entry.Name}' is not a part of an MLP neuron or attention head");
            cuts.Add(new TensorCut(piece.Entry.Name, axis, TensorCut.WhollyMasked(piece.Mask, piece.Rows, piece.Cols, axis)));
        }
        return cuts;
    }

    /// <summary>A piece's output bytes: its masked weights without the slices of <paramref name="cut"/>.</summary>
    internal static byte[] RemovedBytes(LoadedPiece piece, TensorCut? cut)
    {
        var masked = ShardMath.Masked(piece);
        return cut is null ? masked : cut.Apply(masked, piece.Entry.Shape.Length == 1 ? [piece.Rows] : [piece.Rows, piece.Cols], piece.Entry.DType.ElementSize());
    }
}
