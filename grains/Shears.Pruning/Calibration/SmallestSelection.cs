using Shears.Pruning.Masks;

namespace Shears.Pruning.Calibration;

/// <summary>
/// Selection inside one short run of elements (a row, or a group of M): which unmasked elements
/// are the smallest, among equal keys the lower index first.
/// </summary>
internal static class SmallestSelection
{
    /// <summary>
    /// Writes to <paramref name="picked"/> the indices (into <paramref name="keys"/>) of the
    /// <paramref name="count"/> smallest keys whose element is not yet masked, the element of
    /// keys[j] being mask[maskStart + j]; returns how many it wrote (count, or fewer when fewer
    /// are unmasked). Reads the mask, never writes it, so rows may be chosen in parallel.
    /// </summary>
    public static int Pick(ReadOnlySpan<uint> keys, BitMask mask, long maskStart, long count, Span<ulong> scratch, Span<int> picked)
    {
        if (count <= 0) return 0;
        // key in the high half and index in the low half: the packed values are distinct, and their
        // order is the order by key, then by index, so the first `count` after sorting are the answer.
        int n = 0;
        for (int j = 0; j < keys.Length; j++)
            if (!mask[maskStart + j]) scratch[n++] = ((ulong)keys[j] << 32) | (uint)j;
        int take = (int)Math.Min(count, n);
        var live = scratch[..n];
        if (take < n) live.Sort();
        for (int i = 0; i < take; i++) picked[i] = (int)(uint)live[i];
        return take;
    }

    /// <summary>Elements set in mask[start, start + length).</summary>
    public static int CountSet(BitMask mask, long start, long length)
    {
        int n = 0;
        for (long i = start; i < start + length; i++) if (mask[i]) n++;
        return n;
    }
}
