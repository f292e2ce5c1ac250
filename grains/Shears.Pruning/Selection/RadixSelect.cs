using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Shears.Pruning.Masks;

namespace Shears.Pruning.Selection;

/// <summary>
/// Building blocks of the exact selection of the k smallest keys spread over many pieces
/// (see README.md, "Exact global selection without gathering"). Shard side: <see cref="Histogram"/>,
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

        /// <summary>
        /// Bit j set where the key of block[j] is below <paramref name="limit"/> (or at most it, with
        /// <paramref name="atMost"/>); a block holds at most 64 elements.
        /// </summary>
        static abstract ulong Bits(ReadOnlySpan<TElem> block, uint limit, bool atMost);

        /// <summary>Whether every key is below 2^31 (a magnitude: no sign bit), so top digits stay below 0x8000.</summary>
        static abstract bool SignFree { get; }

        /// <summary>
        /// Counts the top digits of the 64 elements from <paramref name="first"/>, all unmasked, into
        /// <paramref name="counts"/>; sign-free views may count into two tables of <see cref="SignFreeBuckets"/> (the
        /// second at that offset), which <see cref="CountTop"/> folds. Returns the OR of the keys' low 16 bits.
        /// </summary>
        static abstract uint CountBlock(ref TElem first, ref uint counts);
    }

    /// <summary>The element is the key.</summary>
    private readonly struct HeldKey : IKeyView<uint>
    {
        public static uint Key(uint stored) => stored;

        public static ulong Bits(ReadOnlySpan<uint> block, uint limit, bool atMost) => UIntBits(block, uint.MaxValue, limit, atMost);

        public static bool SignFree => false;

        public static uint CountBlock(ref uint first, ref uint counts)
        {
            uint low = 0;
            for (int i = 0; i < 64; i += 2)
            {
                uint a = Unsafe.Add(ref first, i), b = Unsafe.Add(ref first, i + 1);
                Unsafe.Add(ref counts, (int)(a >> 16))++;
                Unsafe.Add(ref counts, (int)(b >> 16))++;
                low |= a | b;
            }
            return low & 0xFFFF;
        }
    }

    /// <summary>fp32 weight bits: |w|'s bits, the magnitude key.</summary>
    private readonly struct F32Magnitude : IKeyView<uint>
    {
        public static uint Key(uint stored) => stored & 0x7FFF_FFFF;

        public static ulong Bits(ReadOnlySpan<uint> block, uint limit, bool atMost) => UIntBits(block, 0x7FFF_FFFF, limit, atMost);

        public static bool SignFree => true;

        public static uint CountBlock(ref uint first, ref uint counts)
        {
            // Two elements per 8-byte load, one table each: neighbours often share a bucket, and an increment waits for
            // the one before it in the same table.
            ref byte bytes = ref Unsafe.As<uint, byte>(ref first);
            ulong low = 0;
            for (int i = 0; i < 256; i += 8)
            {
                ulong w = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref bytes, i));
                Unsafe.Add(ref counts, (int)(w >> 16) & 0x7FFF)++;
                Unsafe.Add(ref counts, SignFreeBuckets + ((int)(w >> 48) & 0x7FFF))++;
                low |= w;
            }
            return (uint)(low | low >> 32) & 0xFFFF;
        }
    }

    /// <summary>bf16 weight bits: |w| widened to fp32 bits, the magnitude key.</summary>
    private readonly struct BF16Magnitude : IKeyView<ushort>
    {
        public static uint Key(ushort stored) => (uint)(stored & 0x7FFF) << 16;

        public static ulong Bits(ReadOnlySpan<ushort> block, uint limit, bool atMost)
        {
            // A key is v << 16 with v = |w|'s 15 bits, so it compares with the limit through the limit's top digit:
            // key ≤ limit ⇔ v ≤ top; key < limit ⇔ v < top, or v ≤ top when the limit has low bits (no key equals it).
            ushort top = (ushort)(limit >> 16);
            bool orEqual = atMost || (limit & 0xFFFF) != 0;
            ulong bits = 0;
            int j = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var t = Vector256.Create(top);
                var abs = Vector256.Create((ushort)0x7FFF);
                for (; j + 16 <= block.Length; j += 16)
                {
                    var v = Vector256.Create(block.Slice(j, 16)) & abs;
                    var hit = orEqual ? Vector256.LessThanOrEqual(v, t) : Vector256.LessThan(v, t);
                    bits |= (ulong)hit.ExtractMostSignificantBits() << j;
                }
            }
            for (; j < block.Length; j++)
            {
                int v = block[j] & 0x7FFF;
                bits |= (ulong)((orEqual ? v <= top : v < top) ? 1 : 0) << j;
            }
            return bits;
        }

        public static bool SignFree => true;

        public static uint CountBlock(ref ushort first, ref uint counts)
        {
            // Four elements per 8-byte load, alternating between two tables (see F32Magnitude); keys have no low bits.
            ref byte bytes = ref Unsafe.As<ushort, byte>(ref first);
            for (int i = 0; i < 128; i += 8)
            {
                ulong w = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref bytes, i));
                Unsafe.Add(ref counts, (int)w & 0x7FFF)++;
                Unsafe.Add(ref counts, SignFreeBuckets + ((int)(w >> 16) & 0x7FFF))++;
                Unsafe.Add(ref counts, (int)(w >> 32) & 0x7FFF)++;
                Unsafe.Add(ref counts, SignFreeBuckets + ((int)(w >> 48) & 0x7FFF))++;
            }
            return 0;
        }
    }

    /// <summary>Bit j set where (block[j] &amp; <paramref name="and"/>) is below the limit, or at most it.</summary>
    private static ulong UIntBits(ReadOnlySpan<uint> block, uint and, uint limit, bool atMost)
    {
        ulong bits = 0;
        int j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var l = Vector256.Create(limit);
            var a = Vector256.Create(and);
            for (; j + 8 <= block.Length; j += 8)
            {
                var v = Vector256.Create(block.Slice(j, 8)) & a;
                var hit = atMost ? Vector256.LessThanOrEqual(v, l) : Vector256.LessThan(v, l);
                bits |= (ulong)hit.ExtractMostSignificantBits() << j;
            }
        }
        for (; j < block.Length; j++)
        {
            uint v = block[j] & and;
            bits |= (ulong)((atMost ? v <= limit : v < limit) ? 1 : 0) << j;
        }
        return bits;
    }

    /// <summary>
    /// <see cref="Histogram(ReadOnlySpan{uint}, BitMask, long, int, uint, Span{long})"/> of the magnitude keys of fp32 or
    /// bf16 weights read straight from their little-endian bytes, without a key array or a copy. The caller guarantees
    /// there is no NaN among them (magnitude keys refuse NaN; this reads bits as they are).
    /// </summary>
    public static bool HistogramOfWeights(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype, BitMask mask, long maskOffset, int level, uint prefix, Span<long> histogram)
    {
        long count = WeightCount(raw, dtype);
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

    /// <summary>
    /// The level-0 <see cref="HistogramOfWeights"/> of weights that may hold NaN, refusing it: a NaN's key lies above
    /// +Inf's, so only weights whose histogram reaches past +Inf's bucket (or, for fp32, into it: that bucket also holds
    /// NaN patterns) are read again, by <see cref="Scoring.ScoreKeys.CheckNoNaN"/>, which names the tensor and the first
    /// NaN's element (<paramref name="elementOffset"/> + its index). One pass over clean weights does both. Meant for
    /// weights before their first round (an empty mask): masked elements would not be counted, yet the exact check, when
    /// it runs, reads every element.
    /// </summary>
    public static bool CheckedHistogramOfWeights(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype, BitMask mask, long maskOffset, Span<long> histogram, string tensorName, long elementOffset)
    {
        var own = new long[Buckets];
        bool lowZero = HistogramOfWeights(raw, dtype, mask, maskOffset, 0, 0, own);
        int infinity = (int)(Scoring.ScoreKeys.InfinityKey >> 16);
        if (own.AsSpan(infinity + 1).ContainsAnyExcept(0L) || (dtype == Checkpoints.TensorDType.F32 && own[infinity] > 0))
            Scoring.ScoreKeys.CheckNoNaN(raw, dtype, tensorName, elementOffset);
        for (int b = 0; b < Buckets; b++) histogram[b] += own[b];
        return lowZero;
    }

    private const int SignFreeBuckets = Buckets / 2;

    /// <summary>Counts the top digits of the unmasked keys into <paramref name="counts"/> (<see cref="Buckets"/> entries, cleared).</summary>
    private static bool CountTop<TElem, TView>(ReadOnlySpan<TElem> keys, ReadOnlySpan<ulong> words, long maskOffset, uint[] counts)
        where TElem : unmanaged where TView : struct, IKeyView<TElem>
    {
        if (counts.Length < Buckets) throw new ArgumentException($"a histogram has {Buckets} buckets", nameof(counts));
        ref uint h = ref MemoryMarshal.GetArrayDataReference(counts);
        ref TElem k = ref MemoryMarshal.GetReference(keys);
        uint low = 0;
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == ulong.MaxValue)
            {
                // The common case: a whole block of 64 with nothing masked.
                low |= TView.CountBlock(ref Unsafe.Add(ref k, start), ref h);
                continue;
            }
            while (unmasked != 0)
            {
                uint a = TView.Key(Unsafe.Add(ref k, start + BitOperations.TrailingZeroCount(unmasked)));
                Unsafe.Add(ref h, (int)(a >> 16))++;
                low |= a;
                unmasked &= unmasked - 1;
            }
        }
        if (TView.SignFree)
        {
            // Fold the second table into the first: sign-free keys leave the top half of the buckets empty.
            var all = counts.AsSpan(0, Buckets);
            for (int b = 0; b < SignFreeBuckets; b++) all[b] += all[SignFreeBuckets + b];
            all[SignFreeBuckets..].Clear();
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

    /// <summary>The element count of fp32 or bf16 weight bytes, which are read in place on little-endian machines only.</summary>
    private static long WeightCount(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype)
    {
        if (!BitConverter.IsLittleEndian || dtype is not (Checkpoints.TensorDType.F32 or Checkpoints.TensorDType.BF16))
            throw new ArgumentException($"weights are read directly as F32 or BF16 on little-endian machines, not {dtype}", nameof(dtype));
        int size = dtype == Checkpoints.TensorDType.F32 ? 4 : 2;
        if (raw.Length % size != 0) throw new ArgumentException($"{raw.Length} bytes are not whole {dtype} elements", nameof(raw));
        return raw.Length / size;
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
