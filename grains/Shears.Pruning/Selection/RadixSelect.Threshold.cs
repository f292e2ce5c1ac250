using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Shears.Pruning.Masks;

namespace Shears.Pruning.Selection;

// The shard side after the search: counting keys against a threshold and masking them.
public static partial class RadixSelect
{
    /// <summary>Counts the unmasked keys below <paramref name="threshold"/> and equal to it.</summary>
    public static void CountLessAndEqual(ReadOnlySpan<uint> keys, BitMask mask, uint threshold, out long less, out long equal, long maskOffset = 0)
    {
        CheckSlice(keys.Length, mask, maskOffset);
        CountLessAndEqual<uint, HeldKey>(keys, mask.Words, threshold, out less, out equal, maskOffset);
    }

    /// <summary>
    /// <see cref="CountLessAndEqual(ReadOnlySpan{uint}, BitMask, uint, out long, out long, long)"/> over the magnitude keys
    /// of fp32 or bf16 weights read straight from their little-endian bytes (no NaN among them, as for
    /// <see cref="HistogramOfWeights"/>).
    /// </summary>
    public static void CountLessAndEqualOfWeights(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype, BitMask mask, uint threshold, out long less, out long equal, long maskOffset = 0)
    {
        long count = WeightCount(raw, dtype);
        CheckSlice(count, mask, maskOffset);
        if (dtype == Checkpoints.TensorDType.F32)
            CountLessAndEqual<uint, F32Magnitude>(MemoryMarshal.Cast<byte, uint>(raw), mask.Words, threshold, out less, out equal, maskOffset);
        else
            CountLessAndEqual<ushort, BF16Magnitude>(MemoryMarshal.Cast<byte, ushort>(raw), mask.Words, threshold, out less, out equal, maskOffset);
    }

    private static void CountLessAndEqual<TElem, TView>(ReadOnlySpan<TElem> keys, ReadOnlySpan<ulong> words, uint threshold, out long less, out long equal, long maskOffset)
        where TElem : unmanaged where TView : struct, IKeyView<TElem>
    {
        long lt = 0, le = 0;
        int n = keys.Length;
        for (int start = 0; start < n; start += 64)
        {
            int len = Math.Min(64, n - start);
            ulong unmasked = ~MaskBits(words, maskOffset + start) & LowBits(len);
            if (unmasked == 0) continue;
            var block = keys.Slice(start, len);
            lt += BitOperations.PopCount(TView.Bits(block, threshold, atMost: false) & unmasked);
            le += BitOperations.PopCount(TView.Bits(block, threshold, atMost: true) & unmasked);
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
        return ApplyThreshold<uint, HeldKey>(keys, mask, threshold, tiesToTake, maskOffset);
    }

    /// <summary>
    /// <see cref="ApplyThreshold(ReadOnlySpan{uint}, BitMask, uint, long, long)"/> over the magnitude keys of fp32 or bf16
    /// weights read straight from their little-endian bytes (no NaN among them, as for <see cref="HistogramOfWeights"/>):
    /// the same bits, without a key array. <paramref name="equalAvailable"/>, when known (≥ 0), is the number of unmasked
    /// keys equal to the threshold: taking them all then needs no search for the last tie taken.
    /// </summary>
    public static long ApplyThresholdToWeights(ReadOnlySpan<byte> raw, Checkpoints.TensorDType dtype, BitMask mask, uint threshold, long tiesToTake, long maskOffset = 0, long equalAvailable = -1)
    {
        long count = WeightCount(raw, dtype);
        CheckSlice(count, mask, maskOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(tiesToTake);
        if (equalAvailable >= 0 && tiesToTake > equalAvailable)
            throw new ArgumentOutOfRangeException(nameof(tiesToTake), tiesToTake, $"only {equalAvailable} unmasked keys equal the threshold {threshold:X8}");
        if (equalAvailable >= 0 && tiesToTake == equalAvailable && tiesToTake > 0 && threshold < uint.MaxValue)
        {
            // Every key ≤ threshold goes: no tie is left out, so none needs finding.
            (threshold, tiesToTake) = (threshold + 1, 0);
        }
        return dtype == Checkpoints.TensorDType.F32
            ? ApplyThreshold<uint, F32Magnitude>(MemoryMarshal.Cast<byte, uint>(raw), mask, threshold, tiesToTake, maskOffset)
            : ApplyThreshold<ushort, BF16Magnitude>(MemoryMarshal.Cast<byte, ushort>(raw), mask, threshold, tiesToTake, maskOffset);
    }

    private static long ApplyThreshold<TElem, TView>(ReadOnlySpan<TElem> keys, BitMask mask, uint threshold, long tiesToTake, long maskOffset)
        where TElem : unmanaged where TView : struct, IKeyView<TElem>
    {
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
                var block = keys.Slice(start, len);
                ulong equal = (TView.Bits(block, threshold, atMost: true) ^ TView.Bits(block, threshold, atMost: false)) & ~MaskBits(words, maskOffset + start) & LowBits(len);
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
            var block = keys.Slice(start, len);
            ulong less = TView.Bits(block, threshold, atMost: false);
            ulong take = less;
            if (lastTie >= start)
            {
                ulong equal = TView.Bits(block, threshold, atMost: true) ^ less;
                take |= equal & LowBits((int)Math.Min(64, lastTie - start + 1));
            }
            take &= unmasked;
            masked += BitOperations.PopCount(take);
            mask.OrBits(maskOffset + start, take);
        }
        return masked;
    }
}
