namespace Shears.Pruning.Checkpoints;

/// <summary>
/// One tensor of a checkpoint. <paramref name="FileName"/> is relative to the checkpoint root;
/// <paramref name="FileOffset"/> is the absolute offset of the tensor's first byte in that file.
/// </summary>
public sealed record TensorEntry(string Name, TensorDType DType, long[] Shape, string FileName, long FileOffset, long ByteLength)
{
    /// <summary>Product of the shape; 1 for a scalar (shape []), 0 when any dimension is 0.</summary>
    public long ElementCount => CountElements(Shape);

    /// <summary>Rows of the tensor seen as a matrix of [Shape[0], rest]; 1 for a scalar.</summary>
    public long RowCount => Shape.Length == 0 ? 1 : Shape[0];

    /// <summary>Bytes of one row (see <see cref="RowCount"/>); 0 for an empty tensor.</summary>
    public long RowByteLength => RowCount == 0 ? 0 : ByteLength / RowCount;

    internal static long CountElements(ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (var dim in shape)
        {
            count = checked(count * dim);
        }
        return count;
    }
}
