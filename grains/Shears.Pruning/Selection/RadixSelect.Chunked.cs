using System.Buffers;
using Shears.Pruning.Masks;

namespace Shears.Pruning.Selection;

/// <summary>
/// Writes the keys of elements [<paramref name="start"/>, <paramref name="start"/> + keys.Length) of a piece into
/// <paramref name="keys"/>: scores computed on demand from the weights (or a seed), so a shard never holds a key per
/// weight — for bf16 weights that array would be twice the size of the weights themselves.
/// </summary>
public delegate void KeyFiller(long start, Span<uint> keys);

/// <summary>
/// Adds to <paramref name="histogram"/> the digits of a piece's unmasked keys at <paramref name="level"/> (see
/// <see cref="RadixSelect.Histogram(ReadOnlySpan{uint}, BitMask, long, int, uint, Span{long})"/>), however the piece
/// reads them; returns whether every key counted has zero low 16 bits.
/// </summary>
public delegate bool PieceHistogram(int level, uint prefix, Span<long> histogram);

/// <summary>
/// Masks a piece's unmasked keys below <paramref name="threshold"/> and the first <paramref name="ties"/> equal to it, in
/// index order, however the piece reads its keys; returns how many it masked (see
/// <see cref="RadixSelect.ApplyThreshold(long, KeyFiller, BitMask, uint, long, long, long)"/>, whose
/// <c>equalAvailable</c> <paramref name="equalAvailable"/> is: the unmasked keys equal to the threshold, known from the
/// search).
/// </summary>
public delegate long ThresholdApplier(uint threshold, long ties, long equalAvailable);

public static partial class RadixSelect
{
    /// <summary>Keys filled per step by the <see cref="KeyFiller"/> overloads: a multiple of 64, 256 KiB of keys.</summary>
    public const int ChunkKeys = 1 << 16;

    /// <summary><see cref="Histogram(ReadOnlySpan{uint}, BitMask, long, int, uint, Span{long})"/> over <paramref name="count"/> keys filled chunk by chunk.</summary>
    public static bool Histogram(long count, KeyFiller fill, BitMask mask, long maskOffset, int level, uint prefix, Span<long> histogram)
    {
        CheckHistogram(count, mask, maskOffset, level, prefix, histogram);
        uint[] counts = ArrayPool<uint>.Shared.Rent(Buckets);
        uint[] scratch = ArrayPool<uint>.Shared.Rent(ChunkKeys);
        try
        {
            Array.Clear(counts, 0, Buckets);
            bool lowZero = true;
            ReadOnlySpan<ulong> words = mask.Words;
            // uint counts hold up to 2^32 - 1 keys: flush them into the long histogram before that.
            long sinceFlush = 0;
            for (long start = 0; start < count; start += ChunkKeys)
            {
                var keys = scratch.AsSpan(0, (int)Math.Min(ChunkKeys, count - start));
                fill(start, keys);
                lowZero &= level == 0 ? CountTop<uint, HeldKey>(keys, words, maskOffset + start, counts) : CountLow<uint, HeldKey>(keys, words, maskOffset + start, prefix, counts);
                sinceFlush += keys.Length;
                if (sinceFlush > uint.MaxValue - ChunkKeys || start + keys.Length >= count)
                {
                    for (int b = 0; b < Buckets; b++) histogram[b] += counts[b];
                    Array.Clear(counts, 0, Buckets);
                    sinceFlush = 0;
                }
            }
            return lowZero;
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(scratch);
            ArrayPool<uint>.Shared.Return(counts);
        }
    }

    /// <summary><see cref="CountLessAndEqual(ReadOnlySpan{uint}, BitMask, uint, out long, out long, long)"/> over keys filled chunk by chunk.</summary>
    public static void CountLessAndEqual(long count, KeyFiller fill, BitMask mask, uint threshold, out long less, out long equal, long maskOffset = 0)
    {
        CheckSlice(count, mask, maskOffset);
        uint[] scratch = ArrayPool<uint>.Shared.Rent(ChunkKeys);
        try
        {
            less = equal = 0;
            for (long start = 0; start < count; start += ChunkKeys)
            {
                var keys = scratch.AsSpan(0, (int)Math.Min(ChunkKeys, count - start));
                fill(start, keys);
                CountLessAndEqual(keys, mask, threshold, out long l, out long e, maskOffset + start);
                less += l;
                equal += e;
            }
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// <see cref="ApplyThreshold(ReadOnlySpan{uint}, BitMask, uint, long, long)"/> over keys filled chunk by chunk: the
    /// ties taken are the first unmasked ones in index order, and too few ties throw before any bit changes.
    /// <paramref name="equalAvailable"/>, when known (≥ 0), is the number of unmasked keys equal to the threshold
    /// (from <see cref="CountLessAndEqual(long, KeyFiller, BitMask, uint, out long, out long, long)"/> on the same mask
    /// and keys): it saves the pass that checks the count, and taking them all needs no counting at all.
    /// </summary>
    public static long ApplyThreshold(long count, KeyFiller fill, BitMask mask, uint threshold, long tiesToTake, long maskOffset = 0, long equalAvailable = -1)
    {
        CheckSlice(count, mask, maskOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(tiesToTake);
        if (equalAvailable >= 0 && tiesToTake > equalAvailable)
            throw new ArgumentOutOfRangeException(nameof(tiesToTake), tiesToTake, $"only {equalAvailable} unmasked keys equal the threshold {threshold:X8}");
        bool allTies = equalAvailable >= 0 && tiesToTake == equalAvailable && threshold < uint.MaxValue;
        uint[] scratch = ArrayPool<uint>.Shared.Rent(ChunkKeys);
        try
        {
            // First the chunk holding the last tie taken, so that a bad count changes nothing.
            long tieEnd = allTies ? 0 : count, seen = 0;
            for (long start = 0; start < count && seen < tiesToTake && equalAvailable < 0; start += ChunkKeys)
            {
                var keys = scratch.AsSpan(0, (int)Math.Min(ChunkKeys, count - start));
                fill(start, keys);
                CountLessAndEqual(keys, mask, threshold, out _, out long e, maskOffset + start);
                seen += e;
                tieEnd = start + keys.Length;
            }
            if (equalAvailable < 0 && seen < tiesToTake)
                throw new ArgumentOutOfRangeException(nameof(tiesToTake), tiesToTake, $"only {seen} unmasked keys equal the threshold {threshold:X8}");

            long masked = 0, left = tiesToTake;
            for (long start = 0; start < count; start += ChunkKeys)
            {
                var keys = scratch.AsSpan(0, (int)Math.Min(ChunkKeys, count - start));
                fill(start, keys);
                if (allTies)
                {
                    // Every key ≤ threshold goes: no tie is left out, so nothing needs counting.
                    masked += ApplyThreshold(keys, mask, threshold + 1, 0, maskOffset + start);
                    continue;
                }
                long take = 0;
                if (left > 0 && start < tieEnd)
                {
                    CountLessAndEqual(keys, mask, threshold, out _, out long e, maskOffset + start);
                    take = Math.Min(left, e);
                    left -= take;
                }
                masked += ApplyThreshold(keys, mask, threshold, take, maskOffset + start);
            }
            return masked;
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(scratch);
        }
    }

    private static void CheckHistogram(long keyCount, BitMask mask, long maskOffset, int level, uint prefix, Span<long> histogram)
    {
        CheckSlice(keyCount, mask, maskOffset);
        if (histogram.Length != Buckets)
            throw new ArgumentException($"a histogram has {Buckets} buckets, got {histogram.Length}", nameof(histogram));
        if (level is not (0 or 1))
            throw new ArgumentOutOfRangeException(nameof(level), level, "level is 0 (top 16 bits) or 1 (low 16 bits)");
        if (prefix >= Buckets)
            throw new ArgumentOutOfRangeException(nameof(prefix), prefix, "a prefix is a 16-bit digit");
    }

    private static void CheckSlice(long keyCount, BitMask mask, long maskOffset)
    {
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentOutOfRangeException.ThrowIfNegative(keyCount);
        if (maskOffset < 0 || maskOffset + keyCount > mask.Length)
            throw new ArgumentOutOfRangeException(nameof(maskOffset), maskOffset,
                $"{keyCount} keys from mask offset {maskOffset} do not fit a mask of {mask.Length} elements");
    }
}
