using Shears.Pruning;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// The arithmetic of a LLaMA block as Hugging Face transformers performs it, op for op, so that the
/// same weights give the same numbers: RMSNorm and the softmax in fp32, rotary tables in fp32.
/// </summary>
internal static class LlamaOps
{
    /// <summary>x · rsqrt(mean(x²) + eps) in fp32, cast back, then times the weight in the input's dtype.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps)
    {
        using var scope = NewDisposeScope();
        var inputType = x.dtype;
        var h = x.to(ScalarType.Float32);
        // Scalars are held in locals to the end of the scope: TorchSharp may finalize an implicit one while libtorch reads it.
        using var two = 2.ToScalar();
        using var epsilon = eps.ToScalar();
        var variance = h.pow(two).mean([-1L], keepdim: true);
        h = h * variance.add(epsilon, HeldScalars.One).rsqrt();
        return (weight * h.to(inputType)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// inv_freq = 1 / theta^(arange(0, d, 2) / d) in fp32, with linear or llama3 scaling applied.
    /// Scalar-over-tensor divisions are reciprocal-then-multiply, as torch.Tensor.__rtruediv__ is.
    /// </summary>
    public static Tensor InverseFrequencies(LlamaConfig config, Device device)
    {
        using var scope = NewDisposeScope();
        var d = config.HeadDim;
        var exponents = arange(0L, d, 2L, ScalarType.Int64, device).to(ScalarType.Float32) / d;
        var powers = full_like(exponents, config.RopeTheta).pow(exponents);
        var inv = powers.reciprocal() * 1.0;

        switch (config.RopeScaling)
        {
            case null:
                break;
            case { RopeType: "linear" } linear:
                inv = inv / linear.Factor;
                break;
            case { RopeType: "llama3" } s:
                double old = s.OriginalMaxPositionEmbeddings;
                var lowFreqWavelength = old / s.LowFreqFactor;
                var highFreqWavelength = old / s.HighFreqFactor;
                var wavelength = inv.reciprocal() * (2 * Math.PI);
                var scaled = where(wavelength.gt(lowFreqWavelength), inv / s.Factor, inv);
                var smooth = (wavelength.reciprocal() * old - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                var smoothed = (smooth.neg() + 1.0) * scaled / s.Factor + smooth * scaled;
                var medium = wavelength.lt(highFreqWavelength).logical_not().logical_and(wavelength.gt(lowFreqWavelength).logical_not());
                inv = where(medium, smoothed, scaled);
                break;
            default:
                throw new NotSupportedException($"Rotary scaling '{config.RopeScaling.RopeType}' is not supported.");
        }
        return inv.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>cos and sin of positions 0..length-1 times inv_freq, the half-table repeated twice: [length, d] each, in <paramref name="dtype"/>.</summary>
    public static (Tensor Cos, Tensor Sin) RotaryTables(Tensor inverseFrequencies, long length, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var positions = arange(0L, length, 1L, ScalarType.Int64, inverseFrequencies.device).to(ScalarType.Float32);
        var angles = outer(positions, inverseFrequencies);
        var table = cat([angles, angles], -1);
        var cos = table.cos().to(dtype);
        var sin = table.sin().to(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin for x of shape [B, heads, T, d], rotate_half(x) = cat(−x2, x1).</summary>
    public static Tensor ApplyRotary(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([x2.neg(), x1], -1);
        return (x * cos).Plus(rotated * sin).MoveToOuterDisposeScope();
    }
}
