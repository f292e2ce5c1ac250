using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Engine.Shards;

/// <summary>
/// A piece of a tensor held by a shard: its bytes and mask. The bytes are either a read-only map of the
/// checkpoint (runs that never change weights: no copy, no memory of the silo's own) or an array of the silo's own,
/// made on first need by <see cref="Writable"/>. Element scores are not stored: they are computed chunk by chunk from
/// the bytes (or the seed) whenever selection reads them (<see cref="FillKeys"/>).
/// </summary>
internal sealed class LoadedPiece(ShardPiece piece, TensorEntry entry, byte[]? owned, MappedRange? mapped, BitMask mask, ScoreMethod? scoreMethod, long seed,
    long? syntheticSeed = null)
    : IDisposable
{
    private byte[]? _owned = (owned is null) != (mapped is null) ? owned
        : owned is null && syntheticSeed is not null ? null
        : throw new ArgumentException("a piece holds either its own bytes or a map of them");
    private MappedRange? _mapped = mapped;

    public ShardPiece Piece { get; } = piece;
    public TensorEntry Entry { get; } = entry;
    public BitMask Mask { get; set; } = mask;

    /// <summary>The piece's bytes as they are now.</summary>
    public ReadOnlySpan<byte> Bytes => _owned is not null ? _owned : Mapped.Span;

    public int ByteLength => Synthetic ? checked((int)(Piece.Elements * Entry.DType.ElementSize())) : _owned?.Length ?? Mapped.Length;

    // A disposed piece (unmapped) says so rather than failing on a null map; a generated one has no bytes to give.
    private MappedRange Mapped => _mapped ?? (Synthetic
        ? throw new InvalidOperationException($"piece of '{Entry.Name}' holds generated weights (--synthetic-weights): they have no bytes to read or write")
        : throw new ObjectDisposedException(nameof(LoadedPiece), $"piece of '{Entry.Name}' was released"));

    /// <summary>The piece's weights are generated from a seed (<see cref="SyntheticWeights"/>), not held.</summary>
    public bool Synthetic => syntheticSeed is not null;

    /// <summary>Throws <see cref="CheckpointChangedException"/> when the mapped checkpoint file changed since the load.</summary>
    public void CheckSource() => _mapped?.CheckUnchanged();

    /// <summary>The bytes as an array of this silo's own, copied from the map the first time.</summary>
    public byte[] Writable()
    {
        if (_owned is null)
        {
            _owned = Mapped.Span.ToArray();
            _mapped!.Dispose();
            _mapped = null;
        }
        return _owned;
    }

    /// <summary>
    /// Whether histograms may read magnitude keys straight from the bytes: mapped fp32/bf16 weights, which cannot change
    /// after the load checked them for NaN.
    /// </summary>
    public bool KeysFromBytes => _mapped is not null && scoreMethod == ScoreMethod.Magnitude
                                 && Entry.DType is TensorDType.F32 or TensorDType.BF16 && BitConverter.IsLittleEndian;

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
        if (scoreMethod == ScoreMethod.Random)
        {
            ScoreKeys.Random((ulong)seed, Entry.Name, ElementOffset + start, keys);
            return;
        }
        if (syntheticSeed is { } generated)
        {
            SyntheticWeights.MagnitudeKeys(generated, Entry.Name, ElementOffset + start, keys);
            return;
        }
        int size = Entry.DType.ElementSize();
        ScoreKeys.Magnitude(Bytes.Slice(checked((int)(start * size)), keys.Length * size), Entry.DType, keys, Entry.Name, ElementOffset + start);
    }

    /// <summary>Histogram of the unmasked keys at a level: straight from the weight bits when it may, else chunk by chunk.</summary>
    public bool Histogram(int level, uint prefix, Span<long> into) => KeysFromBytes
        ? RadixSelect.HistogramOfWeights(Bytes, Entry.DType, Mask, 0, level, prefix, into)
        : RadixSelect.Histogram(Piece.Elements, FillKeys, Mask, 0, level, prefix, into);

    /// <summary>The unmasked keys below and at the threshold: from the weight bits when it may, else chunk by chunk.</summary>
    public void CountLessAndEqual(uint threshold, out long less, out long equal)
    {
        if (KeysFromBytes) RadixSelect.CountLessAndEqualOfWeights(Bytes, Entry.DType, Mask, threshold, out less, out equal);
        else RadixSelect.CountLessAndEqual(Piece.Elements, FillKeys, Mask, threshold, out less, out equal);
    }

    /// <summary>
    /// Masks the unmasked keys below the threshold and the first <paramref name="ties"/> at it (see
    /// <see cref="RadixSelect.ApplyThreshold(long, KeyFiller, BitMask, uint, long, long, long)"/>): from the weight bits
    /// when it may, else chunk by chunk.
    /// </summary>
    public long ApplyThreshold(uint threshold, long ties, long equalAvailable) => KeysFromBytes
        ? RadixSelect.ApplyThresholdToWeights(Bytes, Entry.DType, Mask, threshold, ties, 0, equalAvailable)
        : RadixSelect.ApplyThreshold(Piece.Elements, FillKeys, Mask, threshold, ties, 0, equalAvailable);

    /// <summary>A mapped piece's pages leave this process's resident memory until next read (<see cref="MappedRange.ReleaseResident"/>).</summary>
    public void ReleaseResident() => _mapped?.ReleaseResident();

    public void Dispose()
    {
        _mapped?.Dispose();
        _mapped = null;
    }
}
