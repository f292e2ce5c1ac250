using System.Numerics;
using System.Runtime.Intrinsics;

namespace Shears.Bench;

/// <summary>
/// What-if, not product code: RadixSelect.ApplyThreshold with each block's bits OR-ed into its
/// mask word at once instead of BitMask.Set per bit. Writes a separate word array (BitMask
/// offers no word-wise write) and is checked against the real mask, bit for bit.
/// </summary>
internal static class WordwiseApply
{
    /// <summary>
    /// <paramref name="words"/> holds the mask before the round and receives it after. Shards
    /// start at mask offset 0, so blocks of 64 keys are mask words. Returns how many it masked.
    /// </summary>
    public static long Apply(ReadOnlySpan<uint> keys, ulong[] words, uint threshold, long tiesToTake)
    {
        long masked = 0;
        long lastTie = -1, seen = 0;
        for (int i = 0; i < keys.Length && tiesToTake > 0; i++)
        {
            if (keys[i] == threshold && (words[i >> 6] & (1UL << (i & 63))) == 0 && ++seen == tiesToTake)
            {
                lastTie = i;
                break;
            }
        }
        var limit = Vector256.Create(threshold);
        for (int w = 0, start = 0; start < keys.Length; w++, start += 64)
        {
            int len = Math.Min(64, keys.Length - start);
            ulong unmasked = ~words[w] & (len == 64 ? ulong.MaxValue : (1UL << len) - 1);
            if (unmasked == 0) continue;
            ReadOnlySpan<uint> block = keys.Slice(start, len);
            ulong less = 0, atMost = 0;
            int j = 0;
            for (; j + 8 <= len; j += 8)
            {
                var v = Vector256.Create(block.Slice(j, 8));
                less |= (ulong)Vector256.LessThan(v, limit).ExtractMostSignificantBits() << j;
                atMost |= (ulong)Vector256.LessThanOrEqual(v, limit).ExtractMostSignificantBits() << j;
            }
            for (; j < len; j++)
            {
                less |= (ulong)(block[j] < threshold ? 1 : 0) << j;
                atMost |= (ulong)(block[j] <= threshold ? 1 : 0) << j;
            }
            ulong take = less;
            if (lastTie >= start)
            {
                int upTo = (int)Math.Min(64, lastTie - start + 1);
                take |= (atMost ^ less) & (upTo == 64 ? ulong.MaxValue : (1UL << upTo) - 1);
            }
            take &= unmasked;
            masked += BitOperations.PopCount(take);
            words[w] |= take;
        }
        return masked;
    }
}
