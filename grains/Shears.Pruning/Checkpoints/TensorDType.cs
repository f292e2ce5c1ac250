namespace Shears.Pruning.Checkpoints;

/// <summary>Element types of safetensors checkpoints, named as in the safetensors header.</summary>
public enum TensorDType
{
    F64, F32, F16, BF16,
    I64, I32, I16, I8,
    U64, U32, U16, U8,
    BOOL,
    F8_E4M3, F8_E5M2,
}

public static class TensorDTypes
{
    public static int ElementSize(this TensorDType dtype) => dtype switch
    {
        TensorDType.F64 or TensorDType.I64 or TensorDType.U64 => 8,
        TensorDType.F32 or TensorDType.I32 or TensorDType.U32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 or TensorDType.U16 => 2,
        _ => 1,
    };

    /// <summary>F32, F16 and BF16 can be pruned; every other type passes through untouched.</summary>
    public static bool IsPrunable(this TensorDType dtype) =>
        dtype is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16;

    public static string ToHeaderName(this TensorDType dtype) => dtype.ToString();

    /// <summary>
    /// Parses a header name exactly (case-sensitive). Unlike Enum.TryParse it refuses numbers
    /// ("1"), padded names and comma lists ("F32,F16"), which are not dtypes.
    /// </summary>
    public static bool TryParse(string name, out TensorDType dtype)
    {
        foreach (var candidate in Enum.GetValues<TensorDType>())
        {
            if (string.Equals(candidate.ToHeaderName(), name, StringComparison.Ordinal))
            {
                dtype = candidate;
                return true;
            }
        }
        dtype = default;
        return false;
    }

    /// <summary>The header names of every dtype, for error messages.</summary>
    public static string AllHeaderNames => string.Join(", ", Enum.GetValues<TensorDType>().Select(d => d.ToHeaderName()));
}
