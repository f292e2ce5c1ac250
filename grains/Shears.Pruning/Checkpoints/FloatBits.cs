namespace Shears.Pruning.Checkpoints;

/// <summary>Conversions between fp32 and the 16-bit float formats of checkpoints, by their bits.</summary>
public static class FloatBits
{
    /// <summary>Exact: a bf16 value is the top half of an fp32 value.</summary>
    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Rounds to nearest, ties to even, as PyTorch does; a NaN stays a (quiet) NaN with its sign.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x0040);
        }
        var lsb = (bits >> 16) & 1;
        return (ushort)((bits + 0x7FFF + lsb) >> 16);
    }

    /// <summary>Exact widening of an IEEE fp16 value.</summary>
    public static float HalfToSingle(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Rounds to the nearest fp16 value, ties to even (System.Half's conversion).</summary>
    public static ushort SingleToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>
    /// Stores fp32 values as little-endian <paramref name="dtype"/> elements (F32, BF16 or F16, rounding as the
    /// conversions above) into <paramref name="raw"/>, which holds exactly that many elements.
    /// </summary>
    public static void Store(ReadOnlySpan<float> values, TensorDType dtype, Span<byte> raw)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("weights are stored little-endian");
        if (raw.Length != (long)values.Length * dtype.ElementSize())
            throw new ArgumentException($"{values.Length} {dtype} values take {(long)values.Length * dtype.ElementSize()} bytes, got {raw.Length}", nameof(raw));
        switch (dtype)
        {
            case TensorDType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(raw);
                break;
            case TensorDType.BF16:
                var bf16 = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < values.Length; i++) bf16[i] = SingleToBFloat16(values[i]);
                break;
            case TensorDType.F16:
                var f16 = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < values.Length; i++) f16[i] = SingleToHalf(values[i]);
                break;
            default:
                throw new NotSupportedException($"fp32 values are stored as F32, BF16 or F16, not {dtype}");
        }
    }
}
