using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;

namespace Shears.Grains.Shards;

/// <summary>
/// A piece of a tensor held in a shard grain's memory: its bytes and mask. Element scores are not stored: they are
/// computed chunk by chunk from the bytes (or the seed) whenever selection reads them (<see cref="FillKeys"/>).
/// </summary>
internal sealed class LoadedPiece(TensorPiece piece, TensorEntry entry, byte[] raw, BitMask mask, string? scoreMethod, long seed)
{
    public TensorPiece Piece { get; } = piece;
    public TensorEntry Entry { get; } = entry;
    public byte[] Raw { get; } = raw;
    public BitMask Mask { get; set; } = mask;

    /// <summary>Whether elements are selected one by one by score (unstructured magnitude or random).</summary>
    public bool Scored => scoreMethod is not null;

    public long ByteStart => Piece.RowStart * Piece.RowElements * Entry.DType.ElementSize();
    public long ElementOffset => Piece.RowStart * Piece.RowElements;
    public long Rows => Piece.RowCount;
    public long Cols => Piece.RowElements;

    /// <summary>
    /// The score keys (unsigned order = score order) of elements [start, start + keys.Length) of this piece: |w| of the
    /// current bytes for magnitude, so fine-tuned weights are scored as they are now; the seeded hash for random.
    /// </summary>
    public void FillKeys(long start, Span<uint> keys)
    {
        if (scoreMethod == RunOptions.Methods.Random)
        {
            ScoreKeys.Random((ulong)seed, Entry.Name, ElementOffset + start, keys);
            return;
        }
        int size = Entry.DType.ElementSize();
        ScoreKeys.Magnitude(Raw.AsSpan(checked((int)(start * size)), keys.Length * size), Entry.DType, keys, Entry.Name, ElementOffset + start);
    }
}
