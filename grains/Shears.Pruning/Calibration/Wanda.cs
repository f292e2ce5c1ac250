using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
/// weight W_ij scores |W_ij|·‖X_j‖₂, and weights compete only within their output row.
/// </summary>
/// <remarks>
/// Scores are fp32 products |w| × (float)‖X_j‖₂ and selection runs on their bit patterns as
/// unsigned keys, so given the same statistics the mask is the same bit for bit on any machine.
/// A zero weight scores 0 and an infinite one ranks largest (even against a zero norm); NaN
/// weights are refused by name. Masks are cumulative: what is masked stays masked and counts
/// toward its row's target, and the returned mask is a new one.
/// </remarks>
public static class Wanda
{
    /// <summary>Wanda scores as selection keys, row-major [rows, cols] (see <see cref="ScoreKeys"/>).</summary>
    public static uint[] Scores(Tensor weight, InputStatistics stats, string tensorName = "weight")
    {
        var (_, cols) = HostWeights.Shape(weight, tensorName);
        return Scores(HostWeights.Read(weight), Norms(stats, cols, tensorName), tensorName);
    }

    /// <summary>The scores |W_ij|·‖X_j‖₂ themselves (fp32, row-major [rows, cols]), as the selection keys rank them.</summary>
    public static float[] ScoreValues(Tensor weight, InputStatistics stats, string tensorName = "weight")
    {
        var keys = Scores(weight, stats, tensorName);
        var values = new float[keys.Length];
        for (int i = 0; i < keys.Length; i++) values[i] = ScoreKeys.ToScore(keys[i]);
        return values;
    }

    /// <summary>
    /// Unstructured Wanda: every row ends with exactly round_half_to_even(s × cols) masked elements
    /// (more only if <paramref name="existing"/> already masked more there): the smallest scores
    /// among its unmasked elements, ties by lower column.
    /// </summary>
    public static BitMask Mask(Tensor weight, InputStatistics stats, double sparsity, BitMask? existing = null, string tensorName = "weight")
    {
        var (_, cols) = HostWeights.Shape(weight, tensorName);
        long perRow = Counts.Target(sparsity, cols);
        return MaskRows(weight, stats, _ => perRow, existing, tensorName);
    }

    /// <summary>
    /// Unstructured Wanda to a count for the whole tensor (a layer's share under per-layer allocation): row r ends with
    /// ⌊count / rows⌋ masked elements, one more for the first count mod rows rows (more only where
    /// <paramref name="existing"/> already masked more), so the tensor holds exactly <paramref name="count"/>.
    /// Each row's target grows with the count, so the masks of growing counts nest.
    /// </summary>
    public static BitMask MaskCount(Tensor weight, InputStatistics stats, long count, BitMask? existing = null, string tensorName = "weight")
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        if (count < 0 || count > rows * cols)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"tensor '{tensorName}' has {rows * cols} elements; {count} cannot be masked");
        long share = rows == 0 ? 0 : count / rows, extra = rows == 0 ? 0 : count % rows;
        return MaskRows(weight, stats, r => share + (r < extra ? 1 : 0), existing, tensorName);
    }

    private static BitMask MaskRows(Tensor weight, InputStatistics stats, Func<long, long> rowTarget, BitMask? existing, string tensorName)
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName);
        var keys = Scores(HostWeights.Read(weight), Norms(stats, cols, tensorName), tensorName);

        // Rows are independent: each picks in parallel while reading the mask, then the bits are set
        // in one pass (rows may share a word of the mask).
        var picks = new int[rows][];
        Parallel.For(0, rows, () => new ulong[cols], (r, _, scratch) =>
        {
            long start = r * cols;
            long need = rowTarget(r) - SmallestSelection.CountSet(mask, start, cols);
            if (need <= 0) { picks[r] = []; return scratch; }
            var picked = new int[need];
            int got = SmallestSelection.Pick(keys.AsSpan((int)start, (int)cols), mask, start, need, scratch, picked);
            picks[r] = picked[..got];
            return scratch;
        }, _ => { });
        for (long r = 0; r < rows; r++)
            foreach (int c in picks[r]) mask.Set(r * cols + c);
        return mask;
    }

    /// <summary>
    /// N:M Wanda: in every group of M consecutive columns of every row, the N smallest scores are
    /// masked (ties by lower column); elements already masked count toward their group's N.
    /// </summary>
    public static BitMask MaskNm(Tensor weight, InputStatistics stats, NmPattern pattern, BitMask? existing = null, string tensorName = "weight")
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        pattern.EnsureFits(tensorName, rows, cols);
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName);
        var keys = Scores(HostWeights.Read(weight), Norms(stats, cols, tensorName), tensorName);
        pattern.MaskGroups(keys, mask, rows, cols);
        return mask;
    }

    private static float[] Norms(InputStatistics stats, long cols, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(stats);
        if (stats.Features != cols)
            throw new ArgumentException(
                $"tensor '{tensorName}' has {cols} input columns but its calibration statistics have width {stats.Features}", nameof(stats));
        if (stats.Samples == 0)
            throw new ArgumentException($"tensor '{tensorName}': no calibration inputs were added to its statistics", nameof(stats));
        var norms = stats.ColumnNorms();
        var result = new float[norms.Length];
        for (int j = 0; j < norms.Length; j++) result[j] = (float)norms[j];
        return result;
    }

    private static uint[] Scores(float[] values, float[] norms, string tensorName)
    {
        HostWeights.RejectNaN(values, tensorName);
        int cols = norms.Length;
        var keys = new uint[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            float a = Math.Abs(values[i]);
            // 0·Inf and Inf·0 would be NaN: a zero weight scores 0, an infinite one ranks largest.
            keys[i] = a == 0 ? 0
                : float.IsPositiveInfinity(a) ? ScoreKeys.InfinityKey
                : ScoreKeys.FromScore(a * norms[i % cols]);
        }
        return keys;
    }
}
