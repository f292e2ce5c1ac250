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
        return Select(new HeldKeys(keys), mask, count);
    }

    /// <summary>
    /// <see cref="MaskSmallest(ReadOnlySpan{uint}, BitMask, long)"/> with the <paramref name="mask"/>.Length keys filled
    /// chunk by chunk by <paramref name="fill"/> instead of held in memory.
    /// </summary>
    /// <param name="histogram">How the piece histograms its keys, when it has a faster way than filling them (e.g.
    /// reading weight bits directly); by default through <paramref name="fill"/>.</param>
    /// <param name="apply">Likewise how it applies the threshold (the contract of
    /// <see cref="RadixSelect.ApplyThreshold(long, KeyFiller, BitMask, uint, long, long, long)"/> on <paramref name="mask"/>).</param>
    public static SelectionResult MaskSmallest(KeyFiller fill, BitMask mask, long count, PieceHistogram? histogram = null, ThresholdApplier? apply = null)
    {
        ArgumentNullException.ThrowIfNull(fill);
        ArgumentNullException.ThrowIfNull(mask);
        return Select(new FilledKeys(fill, mask.Length, histogram, apply), mask, count);
    }

    /// <summary>Where the keys of one selection come from: held in memory or filled on demand.</summary>
    private interface IKeys
    {
        bool Histogram(BitMask mask, int level, uint prefix, Span<long> histogram);

        /// <param name="equal">The unmasked keys equal to the threshold (the search counted them).</param>
        long Apply(BitMask mask, uint threshold, long ties, long equal);
    }

    private readonly ref struct HeldKeys(ReadOnlySpan<uint> keys) : IKeys
    {
        private readonly ReadOnlySpan<uint> _keys = keys;

        public bool Histogram(BitMask mask, int level, uint prefix, Span<long> histogram) => RadixSelect.Histogram(_keys, mask, 0, level, prefix, histogram);

        public long Apply(BitMask mask, uint threshold, long ties, long equal) => RadixSelect.ApplyThreshold(_keys, mask, threshold, ties);
    }

    private readonly struct FilledKeys(KeyFiller fill, long count, PieceHistogram? own, ThresholdApplier? apply) : IKeys
    {
        public bool Histogram(BitMask mask, int level, uint prefix, Span<long> histogram) =>
            own is not null ? own(level, prefix, histogram) : RadixSelect.Histogram(count, fill, mask, 0, level, prefix, histogram);

        public long Apply(BitMask mask, uint threshold, long ties, long equal) =>
            apply is not null ? apply(threshold, ties, equal) : RadixSelect.ApplyThreshold(count, fill, mask, threshold, ties, 0, equal);
    }

    private static SelectionResult Select<TKeys>(TKeys keys, BitMask mask, long count) where TKeys : IKeys, allows ref struct
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        long unmasked = mask.Length - mask.CountSet();
        if (count > unmasked)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"only {unmasked} of {mask.Length} elements are unmasked");
        if (count == 0) return new SelectionResult(0, 0);

        var search = new GlobalThresholdSearch(count);
        var histogram = new long[RadixSelect.Buckets];
        while (!search.IsComplete)
        {
            bool lowBitsZero = keys.Histogram(mask, search.Level, search.Prefix, histogram);
            search.Submit(histogram, lowBitsZero);
            Array.Clear(histogram);
        }
        long masked = keys.Apply(mask, search.ThresholdKey, search.TiesNeeded, search.CountEqual);
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
