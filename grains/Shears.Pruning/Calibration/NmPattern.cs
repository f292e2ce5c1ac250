using System.Globalization;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// N:M semi-structured sparsity: in every group of <see cref="M"/> consecutive elements along the
/// input dimension of each row (columns 0..M-1, M..2M-1, …), at least <see cref="N"/> are masked.
/// As in the Wanda and SparseGPT code, N counts the pruned elements: 2:4 masks 2 of every 4.
/// </summary>
public sealed record NmPattern
{
    public NmPattern(int n, int m)
    {
        if (n < 1 || m < 2 || n >= m)
            throw new ArgumentOutOfRangeException(nameof(n), $"an N:M pattern needs 1 ≤ N < M, got {n}:{m}");
        N = n;
        M = m;
    }

    /// <summary>Elements masked in every group.</summary>
    public int N { get; }

    /// <summary>Consecutive input columns in a group.</summary>
    public int M { get; }

    /// <summary>The sparsity the pattern gives a tensor it tiles: N / M.</summary>
    public double Sparsity => (double)N / M;

    public void Deconstruct(out int n, out int m) => (n, m) = (N, M);

    public override string ToString() => $"{N}:{M}";

    /// <summary>Reads "N:M" (such as "2:4" or "4:8") with 1 ≤ N &lt; M.</summary>
    /// <exception cref="FormatException">The text is not such a pattern; the message quotes it.</exception>
    public static NmPattern Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Trim().Split(':');
        if (parts.Length != 2
            || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int m))
            throw new FormatException($"pattern '{text}' is not of the form N:M, such as 2:4 or 4:8");
        if (n < 1 || n >= m)
            throw new FormatException($"pattern '{text}': N (pruned in every group) must be at least 1 and smaller than M (the group size)");
        return new NmPattern(n, m);
    }

    public static bool TryParse(string? text, out NmPattern? pattern)
    {
        pattern = null;
        if (text is null) return false;
        try { pattern = Parse(text); return true; }
        catch (FormatException) { return false; }
    }

    /// <summary>Throws, naming the tensor and its shape, unless M divides the tensor's columns.</summary>
    public void EnsureFits(string tensorName, long rows, long cols)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        if (rows < 0 || cols <= 0 || cols % M != 0)
            throw new ArgumentException(
                $"tensor '{tensorName}' of shape [{rows}, {cols}] cannot take the {this} pattern: its input dimension {cols} is not a multiple of {M}");
    }

    /// <summary>
    /// Whether every group of <see cref="M"/> columns in every row holds at least <see cref="N"/>
    /// masked elements; false when M does not divide <paramref name="cols"/>.
    /// </summary>
    public bool IsValid(BitMask mask, long rows, long cols)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (mask.Length != rows * cols)
            throw new ArgumentException($"the mask has {mask.Length} elements, [{rows}, {cols}] has {rows * cols}", nameof(mask));
        if (cols <= 0 || cols % M != 0) return false;
        for (long start = 0; start < mask.Length; start += M)
            if (SmallestSelection.CountSet(mask, start, M) < N) return false;
        return true;
    }

    /// <summary>
    /// Magnitude N:M of a weight tensor [out, in]: in every group the N smallest |w| in fp32, ties by
    /// lower column. Cumulative: elements set in <paramref name="existing"/> stay masked and count
    /// toward their group's N. Returns a new mask; the inputs are left as they were.
    /// </summary>
    public BitMask MagnitudeMask(Tensor weight, BitMask? existing = null, string tensorName = "weight")
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        EnsureFits(tensorName, rows, cols);
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName);
        var values = HostWeights.Read(weight);
        HostWeights.RejectNaN(values, tensorName);
        MaskGroups(HostWeights.MagnitudeKeys(values), mask, rows, cols);
        return mask;
    }

    /// <summary>
    /// Magnitude N:M of a weight held as little-endian checkpoint bytes (F32, F16 or BF16), as a shard
    /// reads it; the same choice as <see cref="MagnitudeMask(Tensor, BitMask?, string)"/>.
    /// </summary>
    public BitMask MagnitudeMask(ReadOnlySpan<byte> raw, TensorDType dtype, long rows, long cols, string tensorName, BitMask? existing = null)
    {
        EnsureFits(tensorName, rows, cols);
        if (rows * cols > Array.MaxLength)
            throw new ArgumentException($"tensor '{tensorName}' of shape [{rows}, {cols}] has more elements than one host array holds", nameof(rows));
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName);
        var keys = new uint[rows * cols];
        ScoreKeys.Magnitude(raw, dtype, keys, tensorName);
        MaskGroups(keys, mask, rows, cols);
        return mask;
    }

    /// <summary>
    /// Magnitude N:M of a weight stored [in, out] (an ONNX MatMul's right-hand side): groups of M consecutive input
    /// features for each output, the groups Wanda and SparseGPT take on the same model (and the reduction dimension's
    /// groups that sparse kernels need), with ties by lower input index. <paramref name="rows"/> is the input width.
    /// </summary>
    public BitMask MagnitudeMaskOfInputRows(ReadOnlySpan<byte> raw, TensorDType dtype, long rows, long cols, string tensorName, BitMask? existing = null)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        if (rows <= 0 || cols < 0 || rows % M != 0)
            throw new ArgumentException(
                $"tensor '{tensorName}' of shape [{rows}, {cols}] (stored [in, out]) cannot take the {this} pattern: its input dimension {rows} is not a multiple of {M}");
        if (rows * cols > Array.MaxLength)
            throw new ArgumentException($"tensor '{tensorName}' of shape [{rows}, {cols}] has more elements than one host array holds", nameof(rows));
        var stored = new uint[rows * cols];
        ScoreKeys.Magnitude(raw, dtype, stored, tensorName);
        var keys = new uint[stored.Length];
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++)
                keys[c * rows + r] = stored[r * cols + c];
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName).Transposed(rows, cols);
        MaskGroups(keys, mask, cols, rows);
        return mask.Transposed(cols, rows);
    }

    /// <summary>
    /// Masks, in every group of the row-major [rows, cols] keys, the smallest unmasked ones (ties by
    /// lower column) until the group holds N masked; groups already holding N or more are left alone.
    /// </summary>
    internal void MaskGroups(ReadOnlySpan<uint> keys, BitMask mask, long rows, long cols)
    {
        var scratchArray = new ulong[M];
        var picked = new int[N];
        for (long start = 0; start < rows * cols; start += M)
        {
            int need = N - SmallestSelection.CountSet(mask, start, M);
            int got = SmallestSelection.Pick(keys.Slice((int)start, M), mask, start, need, scratchArray, picked);
            for (int i = 0; i < got; i++) mask.Set(start + picked[i]);
        }
    }
}
