using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;

namespace Shears.Engine.Shards;

/// <summary>Byte-level helpers of a shard's pieces.</summary>
internal static class ShardMath
{
    /// <summary>A copy of the piece's bytes with its masked elements written as +0.0.</summary>
    public static byte[] Masked(LoadedPiece piece)
    {
        var bytes = GC.AllocateUninitializedArray<byte>(piece.ByteLength);
        MaskedRange(piece, 0, (int)piece.Piece.Elements, bytes);
        return bytes;
    }

    /// <summary>
    /// Copies the <paramref name="count"/> elements from <paramref name="firstElement"/> (a multiple of 64) of the piece
    /// into <paramref name="destination"/> with the masked ones written as +0.0, and returns the bytes written.
    /// </summary>
    public static Span<byte> MaskedRange(LoadedPiece piece, long firstElement, int count, Span<byte> destination) =>
        MaskedRange(piece, firstElement, count, destination, out _);

    /// <summary>
    /// <see cref="MaskedRange(LoadedPiece, long, int, Span{byte})"/> that also counts the elements written that are not
    /// +0.0 (−0.0 included: any non-zero byte), in the same pass.
    /// </summary>
    public static Span<byte> MaskedRange(LoadedPiece piece, long firstElement, int count, Span<byte> destination, out long nonZero)
    {
        if (firstElement % 64 != 0) throw new ArgumentException($"a range starts at a multiple of 64 elements, not {firstElement}", nameof(firstElement));
        int size = piece.Entry.DType.ElementSize();
        var source = piece.Bytes.Slice(checked((int)(firstElement * size)), count * size);
        var bytes = destination[..source.Length];
        nonZero = MaskedCopy.Copy(source, size, piece.Mask.Words.Slice((int)(firstElement / 64), (count + 63) / 64), bytes);
        return bytes;
    }

    /// <summary>Stores fp32 values into the piece's bytes in its dtype (round to nearest even), masked ones as +0.0.</summary>
    public static void WriteFloats(ReadOnlySpan<float> values, LoadedPiece piece)
    {
        if (values.Length != piece.Piece.Elements) throw new ArgumentException($"'{piece.Entry.Name}': {values.Length} values for {piece.Piece.Elements} elements");
        var raw = piece.Writable().AsSpan();
        try
        {
            FloatBits.Store(values, piece.Entry.DType, raw);
        }
        catch (NotSupportedException e)
        {
            throw new NotSupportedException($"'{piece.Entry.Name}': {e.Message}", e);
        }
        // Masked elements back to +0.0, a mask word at a time (in place: each element is read before it is written).
        MaskedCopy.Copy(raw, piece.Entry.DType.ElementSize(), piece.Mask.Words, raw);
    }
}
