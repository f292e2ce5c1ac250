using Shears.Pruning.Masks;

namespace Shears.Pruning.Selection;

/// <summary>What one selection masked: how many, and the largest key among them (0 if none).</summary>
public readonly record struct SelectionResult(long Masked, uint ThresholdKey);

/// <summary>
/// Selection inside one tensor (layer-wise scope): the same radix select as the global scope,
/// with every histogram local. O(n): three passes over the keys, no sort.
/// </summary>
public static class LocalSelection
{
    /// <summary>
    /// Masks exactly <paramref name="count"/> more elements among the unmasked ones: the smallest
    /// keys first, and among equal keys the lower index first. Throws, changing nothing, when
    /// fewer than <paramref name="count"/> are unmasked.
    /// </summary>
    public static SelectionResult MaskSmallest(ReadOnlySpan<uint> keys, BitMask mask, long count)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (mask.Length != keys.Length)
            throw new ArgumentException($"the mask has {mask.Length} elements but there are {keys.Length} keys", nameof(mask));
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        long unmasked = mask.Length - mask.CountSet();
        if (count > unmasked)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"only {unmasked} of {mask.Length} elements are unmasked");
        if (count == 0) return new SelectionResult(0, 0);

        var search = new GlobalThresholdSearch(count);
        var histogram = new long[RadixSelect.Buckets];
        while (!search.IsComplete)
        {
            bool lowBitsZero = RadixSelect.Histogram(keys, mask, 0, search.Level, search.Prefix, histogram);
            search.Submit(histogram, lowBitsZero);
            Array.Clear(histogram);
        }
        long masked = RadixSelect.ApplyThreshold(keys, mask, search.ThresholdKey, search.TiesNeeded);
        return new SelectionResult(masked, search.ThresholdKey);
    }

    /// <summary>
    /// Masks what it takes to reach <paramref name="cumulativeSparsity"/> of the whole tensor,
    /// <see cref="Counts.Target"/>(s, n) elements in all. When that many or more are already masked
    /// it masks nothing: masks never shrink.
    /// </summary>
    public static SelectionResult MaskToTarget(ReadOnlySpan<uint> keys, BitMask mask, double cumulativeSparsity)
    {
        ArgumentNullException.ThrowIfNull(mask);
        long more = Counts.Target(cumulativeSparsity, keys.Length) - mask.CountSet();
        return MaskSmallest(keys, mask, Math.Max(0, more));
    }
}
