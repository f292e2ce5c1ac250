using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// Round-to-nearest quantization of weight groups with compressed-tensors' numeric conventions (FORMATS.md):
/// the range widened to include 0; symmetric scale = absmax / ((qmax − qmin) / 2); asymmetric scale =
/// (max − min) / (qmax − qmin) and zero point = clamp(round(qmin − min / scale)); every step of the scale and zero
/// point rounded to the weight's dtype, as PyTorch computes them on a tensor of that dtype; a zero scale replaced by the
/// dtype's epsilon; q = clamp(round(w / scale + zp)) and w' = (q − zp) · scale in the weight's dtype, rounding half to
/// even throughout. The quotient w / scale is taken in fp32 (exact to half an fp32 ulp), so every value that is not
/// clamped dequantizes within half a scale step; 0.0 always maps to q = zp and back to exactly 0.0.
/// </summary>
public static class GroupQuantizer
{
    /// <summary>The value <paramref name="x"/> rounded to <paramref name="dtype"/> (F32, BF16 or F16), as a float.</summary>
    public static float Round(float x, TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => x,
        TensorDType.BF16 => FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(x)),
        TensorDType.F16 => FloatBits.HalfToSingle(FloatBits.SingleToHalf(x)),
        _ => throw new NotSupportedException($"weights are quantized from F32, BF16 or F16, not {dtype}"),
    };

    /// <summary>torch.finfo(dtype).eps: what a zero scale becomes.</summary>
    public static float Epsilon(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => MathF.Pow(2, -23),
        TensorDType.BF16 => MathF.Pow(2, -7),
        TensorDType.F16 => MathF.Pow(2, -10),
        _ => throw new NotSupportedException($"weights are quantized from F32, BF16 or F16, not {dtype}"),
    };

    /// <summary>
    /// The scale and zero point of one group of weights (values already in <paramref name="dtype"/>). NaN or infinite
    /// values cannot be quantized: <see cref="ArgumentException"/> naming <paramref name="tensor"/>.
    /// </summary>
    public static QuantParams Params(ReadOnlySpan<float> values, QuantScheme scheme, TensorDType dtype, string tensor = "")
    {
        ArgumentNullException.ThrowIfNull(scheme);
        float min = 0, max = 0;
        foreach (float v in values)
        {
            if (!float.IsFinite(v)) throw new ArgumentException($"tensor '{tensor}' holds {v}: only finite weights can be quantized");
            if (v < min) min = v;
            if (v > max) max = v;
        }
        float range = scheme.QMax - scheme.QMin;
        if (scheme.Symmetric)
        {
            float scale = Round(MathF.Max(-min, max) / (range / 2), dtype);
            return new QuantParams(scale == 0 ? Epsilon(dtype) : scale, 0);
        }
        float asymmetric = Round(Round(max - min, dtype) / range, dtype);
        if (asymmetric == 0) asymmetric = Epsilon(dtype);
        float zero = Round(scheme.QMin - Round(min / asymmetric, dtype), dtype);
        int zp = (int)Math.Clamp(MathF.Round(zero, MidpointRounding.ToEven), scheme.QMin, scheme.QMax);
        return new QuantParams(asymmetric, zp);
    }

    /// <summary>q = clamp(round_half_even(w / scale + zp), qmin, qmax).</summary>
    public static int Quantize(float w, QuantParams p, QuantScheme scheme)
    {
        float x = w / p.Scale + p.ZeroPoint;
        return (int)Math.Clamp(MathF.Round(x, MidpointRounding.ToEven), scheme.QMin, scheme.QMax);
    }

    /// <summary>w' = (q − zp) · scale, rounded to the weight's dtype as the loaders compute it.</summary>
    public static float Dequantize(int q, QuantParams p, TensorDType dtype) => Round((q - p.ZeroPoint) * p.Scale, dtype);

    /// <summary>
    /// Quantizes one row of <paramref name="row"/>.Length weights: <paramref name="q"/> gets a value per weight,
    /// <paramref name="groups"/> the parameters of each group (<see cref="QuantScheme.GroupsPerRow"/> of them).
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<float> row, QuantScheme scheme, TensorDType dtype, Span<sbyte> q, Span<QuantParams> groups, string tensor = "")
    {
        ArgumentNullException.ThrowIfNull(scheme);
        int width = checked((int)scheme.GroupWidth(row.Length));
        if (q.Length != row.Length) throw new ArgumentException($"{row.Length} weights need {row.Length} quantized values, got {q.Length}", nameof(q));
        if (groups.Length != scheme.GroupsPerRow(row.Length))
            throw new ArgumentException($"a row of {row.Length} needs {scheme.GroupsPerRow(row.Length)} groups, got {groups.Length}", nameof(groups));
        for (int g = 0; g < groups.Length; g++)
        {
            int start = g * width, count = Math.Min(width, row.Length - start);
            var values = row.Slice(start, count);
            var p = groups[g] = Params(values, scheme, dtype, tensor);
            for (int i = 0; i < count; i++) q[start + i] = (sbyte)Quantize(values[i], p, scheme);
        }
    }
}
