using Shears.Pruning.Masks;

namespace Shears.Pruning.Structured;

/// <summary>
/// Slices removed from a tensor along one axis: 0 drops rows (for a 1-D tensor, elements), 1 drops columns of a 2-D
/// tensor. <paramref name="Removed"/> is ascending and distinct.
/// </summary>
public sealed record TensorCut(string Tensor, int Axis, int[] Removed)
{
    /// <summary>The tensor's shape after the cut.</summary>
    public long[] Shape(long[] shape)
    {
        Check(shape);
        var cut = (long[])shape.Clone();
        cut[Axis] -= Removed.Length;
        return cut;
    }

    /// <summary>The row-major bytes of the tensor without the removed slices.</summary>
    public byte[] Apply(ReadOnlySpan<byte> bytes, long[] shape, int elementSize)
    {
        Check(shape);
        long rows = shape[0], cols = shape.Length == 1 ? 1 : shape[1];
        if (bytes.Length != rows * cols * elementSize)
            throw new ArgumentException($"tensor '{Tensor}': {bytes.Length} bytes for [{string.Join(", ", shape)}] of {elementSize}-byte elements", nameof(bytes));
        var removed = new BitMask(Axis == 0 ? rows : cols);
        foreach (int i in Removed) removed.Set(i);
        var output = GC.AllocateUninitializedArray<byte>(checked((int)(TensorEntryElements(Shape(shape)) * elementSize)));
        int at = 0;
        int rowBytes = (int)(cols * elementSize);
        for (long r = 0; r < rows; r++)
        {
            if (Axis == 0)
            {
                if (removed[r]) continue;
                bytes.Slice((int)(r * rowBytes), rowBytes).CopyTo(output.AsSpan(at));
                at += rowBytes;
                continue;
            }
            var row = bytes.Slice((int)(r * rowBytes), rowBytes);
            // Kept columns in runs: one copy per run between removed columns.
            long start = 0;
            for (long c = 0; c <= cols; c++)
            {
                if (c < cols && !removed[c]) continue;
                int length = (int)((c - start) * elementSize);
                row.Slice((int)(start * elementSize), length).CopyTo(output.AsSpan(at));
                at += length;
                start = c + 1;
            }
        }
        return output;
    }

    /// <summary>
    /// The inverse of <see cref="Apply"/>: the cut tensor's row-major bytes placed back at the full
    /// <paramref name="shape"/>, with zeros in the removed slices.
    /// </summary>
    public byte[] Expand(ReadOnlySpan<byte> cut, long[] shape, int elementSize)
    {
        var smaller = Shape(shape);
        if (cut.Length != TensorEntryElements(smaller) * elementSize)
            throw new ArgumentException($"tensor '{Tensor}': {cut.Length} bytes for the cut [{string.Join(", ", smaller)}] of {elementSize}-byte elements", nameof(cut));
        long rows = shape[0], cols = shape.Length == 1 ? 1 : shape[1];
        var removed = new BitMask(Axis == 0 ? rows : cols);
        foreach (int i in Removed) removed.Set(i);
        var output = new byte[checked((int)(rows * cols * elementSize))];
        int rowBytes = (int)(cols * elementSize), at = 0;
        for (long r = 0; r < rows; r++)
        {
            if (Axis == 0)
            {
                if (removed[r]) continue;
                cut.Slice(at, rowBytes).CopyTo(output.AsSpan((int)(r * rowBytes)));
                at += rowBytes;
                continue;
            }
            for (long c = 0; c < cols; c++)
            {
                if (removed[c]) continue;
                cut.Slice(at, elementSize).CopyTo(output.AsSpan((int)((r * cols + c) * elementSize)));
                at += elementSize;
            }
        }
        return output;
    }

    private static long TensorEntryElements(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    private void Check(long[] shape)
    {
        if (shape.Length is not (1 or 2) || Axis < 0 || Axis >= shape.Length)
            throw new ArgumentException($"tensor '{Tensor}' [{string.Join(", ", shape)}]: a cut along axis {Axis} needs a 1-D or 2-D tensor with that axis");
        for (int i = 0; i < Removed.Length; i++)
            if (Removed[i] < 0 || Removed[i] >= shape[Axis] || (i > 0 && Removed[i] <= Removed[i - 1]))
                throw new ArgumentException($"tensor '{Tensor}': removed indices must be ascending, distinct and below {shape[Axis]}; got {Removed[i]} at {i}");
    }

    /// <summary>The slices along <paramref name="axis"/> of a [rows, cols] tensor whose every element is masked, ascending.</summary>
    public static int[] WhollyMasked(BitMask mask, long rows, long cols, int axis)
    {
        ArgumentNullException.ThrowIfNull(mask);
        var units = new List<int>();
        long count = axis == 0 ? rows : cols;
        for (long u = 0; u < count; u++)
            if (StructuredPruning.IsUnitMasked(mask, rows, cols, axis == 0 ? StructuredAxis.Rows : StructuredAxis.Columns, u)) units.Add((int)u);
        return units.ToArray();
    }
}
