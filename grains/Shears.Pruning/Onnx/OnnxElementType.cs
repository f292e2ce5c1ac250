using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>ONNX <c>TensorProto.DataType</c>, with the numbers of onnx.proto.</summary>
public enum OnnxElementType
{
    Undefined = 0,
    Float = 1,
    UInt8 = 2,
    Int8 = 3,
    UInt16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    String = 8,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    UInt32 = 12,
    UInt64 = 13,
    Complex64 = 14,
    Complex128 = 15,
    BFloat16 = 16,
    Float8E4M3FN = 17,
    Float8E4M3FNUZ = 18,
    Float8E5M2 = 19,
    Float8E5M2FNUZ = 20,
    UInt4 = 21,
    Int4 = 22,
    Float4E2M1 = 23,
    Float8E8M0 = 24,
}

public static class OnnxElementTypes
{
    /// <summary>The Shears dtype of an ONNX element type, or null when Shears has none (strings, complex, 4-bit, FNUZ floats).</summary>
    public static TensorDType? ToTensorDType(this OnnxElementType type) => type switch
    {
        OnnxElementType.Float => TensorDType.F32,
        OnnxElementType.Float16 => TensorDType.F16,
        OnnxElementType.BFloat16 => TensorDType.BF16,
        OnnxElementType.Double => TensorDType.F64,
        OnnxElementType.Int64 => TensorDType.I64,
        OnnxElementType.Int32 => TensorDType.I32,
        OnnxElementType.Int16 => TensorDType.I16,
        OnnxElementType.Int8 => TensorDType.I8,
        OnnxElementType.UInt64 => TensorDType.U64,
        OnnxElementType.UInt32 => TensorDType.U32,
        OnnxElementType.UInt16 => TensorDType.U16,
        OnnxElementType.UInt8 => TensorDType.U8,
        OnnxElementType.Bool => TensorDType.BOOL,
        OnnxElementType.Float8E4M3FN => TensorDType.F8_E4M3,
        OnnxElementType.Float8E5M2 => TensorDType.F8_E5M2,
        _ => null,
    };

    /// <summary>
    /// Bytes that <paramref name="elementCount"/> elements take in <c>raw_data</c>, or null when the type has
    /// no fixed width (strings, undefined, numbers this reader does not know). 4-bit types pack two per byte.
    /// </summary>
    public static long? RawByteLength(this OnnxElementType type, long elementCount) => type switch
    {
        OnnxElementType.Float or OnnxElementType.Int32 or OnnxElementType.UInt32 => checked(elementCount * 4),
        OnnxElementType.Double or OnnxElementType.Int64 or OnnxElementType.UInt64 or OnnxElementType.Complex64 => checked(elementCount * 8),
        OnnxElementType.Complex128 => checked(elementCount * 16),
        OnnxElementType.Float16 or OnnxElementType.BFloat16 or OnnxElementType.Int16 or OnnxElementType.UInt16 => checked(elementCount * 2),
        OnnxElementType.UInt8 or OnnxElementType.Int8 or OnnxElementType.Bool
            or OnnxElementType.Float8E4M3FN or OnnxElementType.Float8E4M3FNUZ
            or OnnxElementType.Float8E5M2 or OnnxElementType.Float8E5M2FNUZ or OnnxElementType.Float8E8M0 => elementCount,
        OnnxElementType.UInt4 or OnnxElementType.Int4 or OnnxElementType.Float4E2M1 => (elementCount + 1) / 2,
        _ => null,
    };

    /// <summary>The name onnx.proto gives the type (FLOAT, FLOAT16, …), or the number when it is unknown.</summary>
    public static string ToOnnxName(this OnnxElementType type) =>
        Enum.IsDefined(type) ? type.ToString().ToUpperInvariant() : $"data type {(int)type}";
}
