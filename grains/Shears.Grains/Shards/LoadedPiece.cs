using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;

namespace Shears.Grains.Shards;

/// <summary>A piece of a tensor held in a shard grain's memory: its bytes, scores and mask.</summary>
internal sealed class LoadedPiece(TensorPiece piece, TensorEntry entry, byte[] raw, uint[]? keys, BitMask mask)
{
    public TensorPiece Piece { get; } = piece;
    public TensorEntry Entry { get; } = entry;
    public byte[] Raw { get; } = raw;
    /// <summary>Score keys (unsigned order = score order); null for patterns that score rows, columns or heads.</summary>
    public uint[]? Keys { get; } = keys;
    public BitMask Mask { get; set; } = mask;
    public long ByteStart => Piece.RowStart * Piece.RowElements * Entry.DType.ElementSize();
    public long Rows => Piece.RowCount;
    public long Cols => Piece.RowElements;
}
