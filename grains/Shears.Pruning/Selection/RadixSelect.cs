using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Shears.Pruning.Masks;

namespace Shears.Pruning.Selection;

/// <summary>
/// Building blocks of the exact selection of the k smallest keys spread over many pieces
/// (see DESIGN.md, "Exact global selection without gathering"). Shard side: <see cref="Histogram"/>,
/// <see cref="CountLessAndEqual"/>, <see cref="ApplyThreshold"/>; coordinator side:
/// <see cref="GlobalThresholdSearch"/>, <see cref="MergeHistograms"/>, <see cref="AssignTies"/>.
/// </summary>
/// <remarks>
/// Every shard-side function reads the keys of one piece and the slice
/// [<c>maskOffset</c>, <c>maskOffset + keys.Length</c>) of <c>mask</c>, so a row block can work on
/// the mask of its whole tensor. Only unmasked elements take part: masks are cumulative.
/// </remarks>
public static partial class RadixSelect
{
    /// <summary>Buckets in a histogram: one per 16-bit digit.</summary>
    public const int Buckets = 1 << 16;

    /// <summary>
    /// Adds to <paramref name="histogram"/> (<see cref="Buckets"/> long counts; the caller clears it)
    /// the digits of the unmasked keys: at level 0 the top 16 bits of every key, at level 1 the low
    /// 16 bits of the keys whose top 16 bits equal <paramref name="prefix"/>.
    /// Returns whether every key counted has zero low 16 bits (always at level 1, or when all are
    /// widened bf16 values): then level 0 alone is exact.
    /// </summary>
    public static bool Histogram(ReadOnlySpan<uint> keys, BitMask mask, long maskOffset, int level, uint prefix, Span<long> histogram)
    {
        CheckHistogram(keys.Length, mask, maskOffset, level, prefix, histogram);

        // A span holds fewer than 2^31 keys, so uint counts cannot overflow; they halve the
        // histogram's cache footprint against longs.
        uint[] counts = ArrayPool<uint>.Shared.Rent(Buckets);
        try
        {
            Array.Clear(counts, 0, Buckets);
            bool lowZero = level == 0 ? CountTop<uint, HeldKey>(keys, mask.Words, maskOffset, counts) : CountLow<uint, HeldKey>(keys, mask.Words, maskOffset, prefix, counts);
            for (int b = 0; b < Buckets; b++) histogram[b] += counts[b];
            return lowZero;
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(counts);
        }
    }

    /// <summary>How a stored element reads as a key.</summary>
    private interface IKeyView<TElem> where TElem : unmanaged
    {
        static abstract uint Key(TElem stored);
    }

    /// <summary>The element is the key.</summary>
    private readonly struct HeldKey : IKeyView<uint>
    {
        public static uint Key(uint stored) => stored;
    }

    /// <summary>fp32 weight bits: |w|'s bits, the magnitude key.</summary>
    private readonly struct F32Magnitude : IKeyView<uint>
    {
        public static uint Key(uint stored) => stored & 0x7FFF_FFFF;
    }

    /// <summary>bf16 weight bits: |w| widened to fp32 bits, the magnitude key.</summary>
    private readonly struct BF16Magnitude : IKeyView<ushort>
    {
        public static uint Key(ushort stored) => (uint)(stored & 0x7FFF) << 16;
    }

    /// <summary>
    /// <see cref="Histogram(ReadOnlySpan{uint}, BitMask, long, int, uint, Span{long})"/> of the magnitude keys of fp32 or
    /// bf16 weights read straight from their little-endian bytes, without a key array or a copy. The caller guarantees
    /// there is no NaN among them (magnitude keys refuse NaN; this reads bits as they are).
    /// </summary>
    public static bool HistogramOfWeights(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype, BitMask mask, long maskOffset, int level, uint prefix, Span<long> histogram)
    {
        if (!BitConverter.IsLittleEndian || dtype is not (Checkpoints.TensorDType.F32 or Checkpoints.TensorDType.BF16))
            throw new ArgumentException($"weights are read directly as F32 or BF16 on little-endian machines, not {dtype}", nameof(dtype));
        int size = dtype == Checkpoints.TensorDType.F32 ? 4 : 2;
        if (raw.Length % size != 0) throw new ArgumentException($"{raw.Length} bytes are not whole {dtype} elements", nameof(raw));
        long count = raw.Length / size;
        CheckHistogram(count, mask, maskOffset, level, prefix, histogram);
        uint[] counts = ArrayPool<uint>.Shared.Rent(Buckets);
        try
        {
            Array.Clear(counts, 0, Buckets);
            bool lowZero;
            if (dtype == Checkpoints.TensorDType.F32)
            {
                var bits = MemoryMarshal.Cast<byte, uint>(raw);
                lowZero = level == 0 ? CountTop<uint, F32Magnitude>(bits, mask.Words, maskOffset, counts) : CountLow<uint, F32Magnitude>(bits, mask.Words, maskOffset, prefix, counts);
            }
            else
            {
                var bits = MemoryMarshal.Cast<byte, ushort>(raw);
                lowZero = level == 0 ? CountTop<ushort, BF16Magnitude>(bits, mask.Words, maskOffset, counts) : CountLow<ushort, BF16Magnitude>(bits, mask.Words, maskOffset, prefix, counts);
            }
            for (int b = 0; b < Buckets; b++) histogram[b] += counts[b];
            return lowZero;
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(counts);
        }
    }

    private static bool CountTop<TElem, TView>(ReadOnlySpan<TElem> keys, ReadOnlySpan<ulong> words, long maskOffset, uint[] counts)
        where TElem : unmanaged where TView : struct, IKeyView<TElem>
    {
        ref uint h = ref MemoryMarshal.GetArrayDataReference(counts);
        ref TElem k = ref MemoryMarshal.GetReference(keys);
        uint low = 0;
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == LowBits(len))
            {
                // The common case: nothing masked in this block of 64.
                int end = start + len;
                int i = start;
                for (; i + 1 < end; i += 2)
                {
                    uint a = TView.Key(Unsafe.Add(ref k, i)), b = TView.Key(Unsafe.Add(ref k, i + 1));
                    Unsafe.Add(ref h, (int)(a >> 16))++;
                    Unsafe.Add(ref h, (int)(b >> 16))++;
                    low |= a | b;
                }
                if (i < end)
                {
                    uint a = TView.Key(Unsafe.Add(ref k, i));
                    Unsafe.Add(ref h, (int)(a >> 16))++;
                    low |= a;
                }
            }
            else
            {
                while (unmasked != 0)
                {
                    uint a = TView.Key(Unsafe.Add(ref k, start + BitOperations.TrailingZeroCount(unmasked)));
                    Unsafe.Add(ref h, (int)(a >> 16))++;
                    low |= a;
                    unmasked &= unmasked - 1;
                }
            }
        }
        return (low & 0xFFFF) == 0;
    }

    private static bool CountLow<TElem, TView>(ReadOnlySpan<TElem> keys, ReadOnlySpan<ulong> words, long maskOffset, uint prefix, uint[] counts)
        where TElem : unmanaged where TView : struct, IKeyView<TElem>
    {
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == LowBits(len))
            {
                foreach (TElem raw in keys.Slice(start, len))
                {
                    uint a = TView.Key(raw);
                    if (a >> 16 == prefix) counts[a & 0xFFFF]++;
                }
            }
            else
            {
                while (unmasked != 0)
                {
                    uint a = TView.Key(keys[start + BitOperations.TrailingZeroCount(unmasked)]);
                    if (a >> 16 == prefix) counts[a & 0xFFFF]++;
                    unmasked &= unmasked - 1;
                }
            }
        }
        return true;
    }

    /// <summary>Counts the unmasked keys below <paramref name="threshold"/> and equal to it.</summary>
    public static void CountLessAndEqual(ReadOnlySpan<uint> keys, BitMask mask, uint threshold, out long less, out long equal, long maskOffset = 0)
    {
        CheckSlice(keys.Length, mask, maskOffset);
        ReadOnlySpan<ulong> words = mask.Words;
        long lt = 0, le = 0;
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == 0) continue;
            ReadOnlySpan<uint> block = keys.Slice(start, len);
            lt += BitOperations.PopCount(BitsBelow(block, threshold) & unmasked);
            le += BitOperations.PopCount(BitsAtMost(block, threshold) & unmasked);
        }
        less = lt;
        equal = le - lt;
    }

    /// <summary>
    /// Masks every unmasked key below <paramref name="threshold"/> and the first
    /// <paramref name="tiesToTake"/> unmasked keys equal to it, in index order. Returns how many
    /// elements it newly masked. Throws, leaving the mask as it was, when fewer ties are unmasked.
    /// </summary>
    public static long ApplyThreshold(ReadOnlySpan<uint> keys, BitMask mask, uint threshold, long tiesToTake, long maskOffset = 0)
    {
        CheckSlice(keys.Length, mask, maskOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(tiesToTake);

        // Last index whose tie is taken: found before any bit changes, so a bad count changes nothing.
        long lastTie = -1;
        ReadOnlySpan<ulong> words = mask.Words;
        if (tiesToTake > 0)
        {
            // Block by block: count the unmasked ties, then find the last one taken inside its block.
            long seen = 0;
            for (int start = 0; start < keys.Length && lastTie < 0; start += 64)
            {
                int len = Math.Min(64, keys.Length - start);
                ReadOnlySpan<uint> block = keys.Slice(start, len);
                ulong equal = (BitsAtMost(block, threshold) ^ BitsBelow(block, threshold)) & ~MaskBits(words, maskOffset + start) & LowBits(len);
                int count = BitOperations.PopCount(equal);
                if (seen + count < tiesToTake) { seen += count; continue; }
                for (long need = tiesToTake - seen; need > 1; need--) equal &= equal - 1;
                lastTie = start + BitOperations.TrailingZeroCount(equal);
                seen = tiesToTake;
            }
            if (lastTie < 0)
                throw new ArgumentOutOfRangeException(nameof(tiesToTake), tiesToTake,
                    $"only {seen} unmasked keys equal the threshold {threshold:X8}");
        }

        long masked = 0;
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == 0) continue;
            // Which keys go is data, not a pattern: build the block's bits without branches.
            ReadOnlySpan<uint> block = keys.Slice(start, len);
            ulong less = BitsBelow(block, threshold);
            ulong take = less;
            if (lastTie >= start)
            {
                ulong equal = BitsAtMost(block, threshold) ^ less;
                take |= equal & LowBits((int)Math.Min(64, lastTie - start + 1));
            }
            take &= unmasked;
            masked += BitOperations.PopCount(take);
            mask.OrBits(maskOffset + start, take);
        }
        return masked;
    }

    /// <summary>Sums histograms bucket by bucket; none gives an empty histogram.</summary>
    public static long[] MergeHistograms(IEnumerable<long[]> histograms)
    {
        var sum = new long[Buckets];
        foreach (long[] h in histograms)
        {
            if (h.Length != Buckets)
                throw new ArgumentException($"a histogram has {Buckets} buckets, got {h.Length}", nameof(histograms));
            for (int b = 0; b < Buckets; b++) sum[b] += h[b];
        }
        return sum;
    }

    /// <summary>
    /// Shares out the <paramref name="needed"/> ties at the threshold: pieces are listed in global
    /// position order (tensor ordinal order, then row-block start) with the count of unmasked keys
    /// equal to the threshold in each, and the first pieces give all theirs first.
    /// </summary>
    public static long[] AssignTies(IReadOnlyList<long> tiesPerPiece, long needed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(needed);
        var take = new long[tiesPerPiece.Count];
        long left = needed;
        for (int p = 0; p < take.Length; p++)
        {
            if (tiesPerPiece[p] < 0)
                throw new ArgumentOutOfRangeException(nameof(tiesPerPiece), tiesPerPiece[p], $"piece {p} reports a negative tie count");
            take[p] = Math.Min(left, tiesPerPiece[p]);
            left -= take[p];
        }
        if (left > 0)
            throw new InvalidOperationException($"{needed} ties are needed at the threshold but the pieces hold only {needed - left}");
        return take;
    }

    /// <summary>Bit j set where block[j] &lt; limit; blocks hold at most 64 keys.</summary>
    private static ulong BitsBelow(ReadOnlySpan<uint> block, uint limit) => BitsWhere<Below>(block, limit);

    /// <summary>Bit j set where block[j] ≤ limit; blocks hold at most 64 keys.</summary>
    private static ulong BitsAtMost(ReadOnlySpan<uint> block, uint limit) => BitsWhere<AtMost>(block, limit);

    /// <summary>A comparison with the limit, lane by lane and one key at a time.</summary>
    private interface IComparison
    {
        static abstract Vector256<uint> Lanes(Vector256<uint> keys, Vector256<uint> limit);

        static abstract bool One(uint key, uint limit);
    }

    private readonly struct Below : IComparison
    {
        public static Vector256<uint> Lanes(Vector256<uint> keys, Vector256<uint> limit) => Vector256.LessThan(keys, limit);

        public static bool One(uint key, uint limit) => key < limit;
    }

    private readonly struct AtMost : IComparison
    {
        public static Vector256<uint> Lanes(Vector256<uint> keys, Vector256<uint> limit) => Vector256.LessThanOrEqual(keys, limit);

        public static bool One(uint key, uint limit) => key <= limit;
    }

    private static ulong BitsWhere<TComparison>(ReadOnlySpan<uint> block, uint limit) where TComparison : struct, IComparison
    {
        ulong bits = 0;
        int j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var l = Vector256.Create(limit);
            for (; j + 8 <= block.Length; j += 8)
                bits |= (ulong)TComparison.Lanes(Vector256.Create(block.Slice(j, 8)), l).ExtractMostSignificantBits() << j;
        }
        for (; j < block.Length; j++) bits |= (ulong)(TComparison.One(block[j], limit) ? 1 : 0) << j;
        return bits;
    }

    /// <summary>The 64 mask bits from bit <paramref name="bit"/> on (bits past the end read as zero).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong MaskBits(ReadOnlySpan<ulong> words, long bit)
    {
        long w = bit >> 6;
        int shift = (int)(bit & 63);
        ulong lo = words[(int)w];
        if (shift == 0) return lo;
        ulong hi = w + 1 < words.Length ? words[(int)w + 1] : 0;
        return (lo >> shift) | (hi << (64 - shift));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong LowBits(int count) => count == 64 ? ulong.MaxValue : (1UL << count) - 1;

}
