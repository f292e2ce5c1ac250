using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>Where an initializer's elements are stored.</summary>
public enum OnnxDataStorage
{
    /// <summary>In <c>raw_data</c> inside the model file: <see cref="OnnxInitializer.RawDataOffset"/> locates it.</summary>
    RawData,

    /// <summary>In a typed repeated field (<c>float_data</c>, <c>int64_data</c>, …) inside the model file.</summary>
    TypedField,

    /// <summary>In another file, described by <see cref="OnnxInitializer.ExternalData"/>.</summary>
    External,

    /// <summary>No data at all (an empty tensor, or a tensor whose every element field is absent).</summary>
    None,
}

/// <summary>The <c>external_data</c> entries of a tensor stored outside the model file.</summary>
/// <param name="Location">Path relative to the model file's directory.</param>
/// <param name="Offset">Byte offset inside that file (0 when absent).</param>
/// <param name="Length">Byte length, when given.</param>
public sealed record OnnxExternalData(string Location, long Offset, long? Length);

/// <summary>
/// One initializer of the main graph. <see cref="RawDataOffset"/> is the absolute offset of its <c>raw_data</c>
/// payload in the model file; null when the data is stored another way (see <see cref="Storage"/>).
/// </summary>
public sealed record OnnxInitializer(
    string Name,
    OnnxElementType ElementType,
    long[] Dims,
    OnnxDataStorage Storage,
    long? RawDataOffset,
    long? RawDataLength,
    OnnxExternalData? ExternalData)
{
    /// <summary>The Shears dtype, or null when Shears has none for <see cref="ElementType"/>.</summary>
    public TensorDType? DataType => ElementType.ToTensorDType();

    /// <summary>Product of the dims; 1 for a scalar.</summary>
    public long ElementCount => TensorEntry.CountElements(Dims);

    /// <summary>
    /// The initializer as a checkpoint tensor: in the model file (<paramref name="modelFileName"/>, named relative to its
    /// directory) for <c>raw_data</c>, in its external data file for external data (the location as given, checked by
    /// <see cref="OnnxCheckpoint"/>); null when the data is in typed fields or the type has no Shears dtype.
    /// </summary>
    public TensorEntry? ToTensorEntry(string modelFileName)
    {
        if (DataType is not { } dtype) return null;
        if (RawDataOffset is { } offset && RawDataLength is { } length)
            return new TensorEntry(Name, dtype, (long[])Dims.Clone(), modelFileName, offset, length);
        if (ExternalData is { } external)
            return new TensorEntry(Name, dtype, (long[])Dims.Clone(), external.Location, external.Offset, external.Length ?? ElementCount * dtype.ElementSize());
        return null;
    }
}
