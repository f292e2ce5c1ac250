using System.Buffers.Binary;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;

namespace Shears.Pruning.Structured;

/// <summary>The unit that structured pruning removes from a row-major [rows, cols] weight.</summary>
public enum StructuredAxis
{
    /// <summary>Whole rows: output neurons of a Linear weight (PyTorch's <c>dim=0</c>).</summary>
    Rows,

    /// <summary>Whole columns: input features of a Linear weight (PyTorch's <c>dim=1</c>).</summary>
    Columns,
}

/// <summary>
/// Ln-structured pruning as PyTorch's <c>ln_structured</c>, with Shears' count and tie rules.
/// </summary>
/// <remarks>
/// <para>Norms follow PyTorch: once a tensor has been pruned, <c>prune</c> scores the module's current
/// weight, which is the original times the mask, so masked elements count as zero in the norms of the
/// next round. <see cref="Norms"/> takes the element mask for that reason.</para>
/// <para>Counts differ from PyTorch on purpose. PyTorch's container applies a later amount to the
/// channels still alive; Shears' sparsity is cumulative: after a round with target <c>s</c> exactly
/// <c>round_half_to_even(s × units)</c> rows (or columns) are fully masked, counting those already
/// fully masked, unless more were masked before (masks are never cleared). Among equal norms the unit
/// with the lower index goes first, where PyTorch's <c>topk</c> leaves the order unspecified.</para>
/// </remarks>
public static class StructuredPruning
{
    /// <summary>
    /// The Ln norm of every row or column, accumulated in double in ascending element order
    /// (so results are bit-for-bit reproducible). Elements set in <paramref name="mask"/> count as zero.
    /// </summary>
    /// <param name="p">1, 2 or <see cref="double.PositiveInfinity"/>.</param>
    /// <exception cref="ArgumentException">A weight is NaN (masked or not), or a size does not fit.</exception>
    public static double[] Norms(
        ReadOnlySpan<byte> raw, TensorDType dtype, long rows, long cols, StructuredAxis axis, double p,
        string tensorName, BitMask? mask = null)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        long elements = CheckShape(rows, cols, tensorName);
        if (p != 1 && p != 2 && p != double.PositiveInfinity)
            throw new ArgumentOutOfRangeException(nameof(p), p, $"tensor '{tensorName}': the norm order p must be 1, 2 or +Inf");
        CheckAxis(axis);
        int size = CheckDType(dtype, tensorName);
        if (raw.Length != checked(elements * size))
            throw new ArgumentException(
                $"tensor '{tensorName}': [{rows}, {cols}] {dtype} takes {elements * size} bytes, got {raw.Length}", nameof(raw));
        if (mask is not null && mask.Length != elements)
            throw new ArgumentException(
                $"tensor '{tensorName}': the mask has {mask.Length} elements, the tensor {elements}", nameof(mask));

        var norms = new double[axis == StructuredAxis.Rows ? rows : cols];
        var row = new float[rows > 0 ? cols : 0];
        int rowBytes = (int)(cols * size);
        for (long r = 0; r < rows; r++)
        {
            Decode(raw.Slice((int)(r * rowBytes), rowBytes), dtype, row);
            for (int c = 0; c < row.Length; c++)
            {
                float x = row[c];
                if (float.IsNaN(x))
                    throw new ArgumentException($"tensor '{tensorName}' has NaN at [{r}, {c}]", nameof(raw));
                double a = mask is not null && mask[r * cols + c] ? 0.0 : Math.Abs((double)x);
                ref double acc = ref norms[axis == StructuredAxis.Rows ? r : c];
                if (p == 1) acc += a;
                else if (p == 2) acc += a * a;
                else if (a > acc) acc = a;
            }
        }
        if (p == 2)
            for (int i = 0; i < norms.Length; i++) norms[i] = Math.Sqrt(norms[i]);
        return norms;
    }

    /// <summary>
    /// Masks whole rows or columns until <c>round_half_to_even(cumulativeSparsity × units)</c> of them are
    /// fully masked: the smallest norms among the units not yet fully masked, ties by lower index.
    /// </summary>
    /// <param name="norms">One norm per unit, as from <see cref="Norms"/>.</param>
    /// <param name="mask">The element mask of the whole tensor; updated in place.</param>
    /// <returns>The number of units newly masked (0 when the target is already met).</returns>
    public static long MaskSmallest(
        double[] norms, BitMask mask, long rows, long cols, StructuredAxis axis, double cumulativeSparsity)
    {
        ArgumentNullException.ThrowIfNull(norms);
        ArgumentNullException.ThrowIfNull(mask);
        long elements = CheckShape(rows, cols, "(structured)");
        CheckAxis(axis);
        CheckSparsity(cumulativeSparsity);
        long units = axis == StructuredAxis.Rows ? rows : cols;
        if (norms.Length != units)
            throw new ArgumentException($"{units} {Plural(axis)} need {units} norms, got {norms.Length}", nameof(norms));
        if (mask.Length != elements)
            throw new ArgumentException($"the mask has {mask.Length} elements, a [{rows}, {cols}] tensor {elements}", nameof(mask));
        for (int i = 0; i < norms.Length; i++)
            if (double.IsNaN(norms[i]))
                throw new ArgumentException($"the norm of {Singular(axis)} {i} is NaN", nameof(norms));

        long target = TargetCount(cumulativeSparsity, units);
        var candidates = new List<int>();
        for (int u = 0; u < units; u++)
            if (!IsUnitMasked(mask, rows, cols, axis, u)) candidates.Add(u);
        long already = units - candidates.Count;
        long toMask = target - already;
        if (toMask <= 0) return 0;

        // (norm, index) is a total order, so the result does not depend on the sort's stability.
        candidates.Sort((a, b) => norms[a] != norms[b] ? norms[a].CompareTo(norms[b]) : a.CompareTo(b));
        for (int i = 0; i < toMask; i++) MaskUnit(mask, rows, cols, axis, candidates[i]);
        return toMask;
    }

    /// <summary>One structured round: <see cref="Norms"/> over the currently masked weight, then <see cref="MaskSmallest"/>.</summary>
    public static long Prune(
        ReadOnlySpan<byte> raw, TensorDType dtype, long rows, long cols, StructuredAxis axis, double p,
        double cumulativeSparsity, BitMask mask, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(mask);
        CheckSparsity(cumulativeSparsity);
        var norms = Norms(raw, dtype, rows, cols, axis, p, tensorName, mask);
        return MaskSmallest(norms, mask, rows, cols, axis, cumulativeSparsity);
    }

    /// <summary>True when every element of the row or column is masked (vacuously for an empty one).</summary>
    public static bool IsUnitMasked(BitMask mask, long rows, long cols, StructuredAxis axis, long unit)
    {
        if (axis == StructuredAxis.Rows)
        {
            for (long i = unit * cols, end = i + cols; i < end; i++) if (!mask[i]) return false;
        }
        else
        {
            for (long r = 0; r < rows; r++) if (!mask[r * cols + unit]) return false;
        }
        return true;
    }

    /// <summary>Decodes little-endian F32, F16 or BF16 elements to float; BF16 widens exactly as bits &lt;&lt; 16.</summary>
    internal static void Decode(ReadOnlySpan<byte> src, TensorDType dtype, Span<float> dst)
    {
        switch (dtype)
        {
            case TensorDType.F32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(4 * i)..]);
                break;
            case TensorDType.F16:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(src[(2 * i)..]);
                break;
            case TensorDType.BF16:
                for (int i = 0; i < dst.Length; i++)
                    dst[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(2 * i)..]) << 16);
                break;
            default:
                throw new ArgumentException($"cannot decode {dtype}; expected F32, F16 or BF16", nameof(dtype));
        }
    }

    /// <summary>Element size of a prunable dtype; anything else is an error naming the tensor.</summary>
    internal static int CheckDType(TensorDType dtype, string tensorName)
    {
        if (!dtype.IsPrunable())
            throw new ArgumentException($"tensor '{tensorName}' has dtype {dtype}; structured pruning needs F32, F16 or BF16", nameof(dtype));
        return dtype.ElementSize();
    }

    // Same rule as Selection's Counts.Target (kept private here so this file stands alone).
    private static long TargetCount(double sparsity, long units) =>
        (long)Math.Round(sparsity * units, MidpointRounding.ToEven);

    /// <summary>Sets every element of one row or column.</summary>
    public static void MaskUnit(BitMask mask, long rows, long cols, StructuredAxis axis, long unit)
    {
        if (axis == StructuredAxis.Rows) mask.SetRange(unit * cols, cols);
        else for (long r = 0; r < rows; r++) mask.Set(r * cols + unit);
    }

    private static long CheckShape(long rows, long cols, string tensorName)
    {
        if (rows < 0 || cols < 0)
            throw new ArgumentException($"tensor '{tensorName}': shape [{rows}, {cols}] has a negative dimension");
        long elements = checked(rows * cols);
        if (cols > Array.MaxLength || rows > Array.MaxLength)
            throw new ArgumentException($"tensor '{tensorName}': shape [{rows}, {cols}] is too large");
        return elements;
    }

    private static void CheckAxis(StructuredAxis axis)
    {
        if (axis is not (StructuredAxis.Rows or StructuredAxis.Columns))
            throw new ArgumentOutOfRangeException(nameof(axis), axis, "expected Rows or Columns");
    }

    private static void CheckSparsity(double sparsity)
    {
        if (!(sparsity >= 0 && sparsity <= 1))
            throw new ArgumentOutOfRangeException("cumulativeSparsity", sparsity, "sparsity must be in [0, 1]");
    }

    private static string Plural(StructuredAxis axis) => axis == StructuredAxis.Rows ? "rows" : "columns";

    private static string Singular(StructuredAxis axis) => axis == StructuredAxis.Rows ? "row" : "column";
}
