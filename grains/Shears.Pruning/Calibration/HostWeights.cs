using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>Checks and host copies of a Linear weight [out, in] handed over as a tensor.</summary>
internal static class HostWeights
{
    /// <summary>Rows and columns of a 2-D F32, BF16 or F16 weight; anything else is refused by name.</summary>
    public static (long Rows, long Cols) Shape(Tensor weight, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(tensorName);
        if (weight.dim() != 2)
            throw new ArgumentException(
                $"tensor '{tensorName}' has shape {InputStatistics.ShapeText(weight.shape)}; a Linear weight is 2-D [out, in]", nameof(weight));
        if (weight.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"tensor '{tensorName}' has dtype {weight.dtype}; expected Float32, BFloat16 or Float16", nameof(weight));
        long rows = weight.shape[0], cols = weight.shape[1];
        if (rows == 0 || cols == 0)
            throw new ArgumentException($"tensor '{tensorName}' of shape [{rows}, {cols}] has no elements", nameof(weight));
        if (rows * cols > Array.MaxLength)
            throw new ArgumentException($"tensor '{tensorName}' of shape [{rows}, {cols}] has more elements than one host array holds", nameof(weight));
        return (rows, cols);
    }

    /// <summary>The weight as fp32 values, row-major, on the host (exact for BF16 and F16).</summary>
    public static float[] Read(Tensor weight)
    {
        using var scope = NewDisposeScope();
        return weight.detach().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
    }

    /// <summary>Throws <see cref="NaNWeightException"/> naming the tensor and the first NaN element.</summary>
    public static void RejectNaN(ReadOnlySpan<float> values, string tensorName)
    {
        int at = FirstNaN(values);
        if (at >= 0) throw new NaNWeightException(tensorName, at);
    }

    private static int FirstNaN(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++) if (float.IsNaN(values[i])) return i;
        return -1;
    }

    /// <summary>Magnitude keys |w| of fp32 weights (NaN already refused): −0 scores 0, ±Inf largest.</summary>
    public static uint[] MagnitudeKeys(ReadOnlySpan<float> values)
    {
        var keys = new uint[values.Length];
        for (int i = 0; i < values.Length; i++) keys[i] = BitConverter.SingleToUInt32Bits(values[i]) & 0x7FFF_FFFF;
        return keys;
    }

    /// <summary>A copy of <paramref name="existing"/>, or an empty mask; its length must fit the weight.</summary>
    public static BitMask StartMask(BitMask? existing, long rows, long cols, string tensorName)
    {
        if (existing is null) return new BitMask(rows * cols);
        if (existing.Length != rows * cols)
            throw new ArgumentException(
                $"tensor '{tensorName}' of shape [{rows}, {cols}] has {rows * cols} elements, its existing mask {existing.Length}", nameof(existing));
        return existing.Clone();
    }
}
