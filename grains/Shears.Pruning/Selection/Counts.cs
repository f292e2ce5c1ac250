namespace Shears.Pruning.Selection;

/// <summary>How many elements a sparsity means.</summary>
public static class Counts
{
    /// <summary>
    /// Elements masked at sparsity <paramref name="sparsity"/> over <paramref name="n"/> elements:
    /// round_half_to_even(s × n), with s × n computed as one IEEE double product (so 0.4 × 17 =
    /// 6.800000000000001 → 7, 0.5 × 5 = 2.5 → 2, 0.5 × 7 = 3.5 → 4).
    /// </summary>
    public static long Target(double sparsity, long n)
    {
        if (!(sparsity >= 0 && sparsity <= 1))
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, "sparsity must be between 0 and 1");
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        return Math.Min(n, (long)Math.Round(sparsity * n, MidpointRounding.ToEven));
    }
}
