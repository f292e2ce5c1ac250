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
}
