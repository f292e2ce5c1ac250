using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>The arithmetic of a BERT block as the exported ONNX graph spells it, op for op.</summary>
public static class BertOps
{
    /// <summary>
    /// (x − mean) / sqrt(mean((x − mean)²) + eps) · weight + bias over the last dimension: ReduceMean, Sub, Pow,
    /// ReduceMean, Add, Sqrt, Div, Mul, Add, as in the graph (a biased variance, eps inside the root).
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        using var scope = NewDisposeScope();
        var centered = x.Minus(x.mean([-1L], keepdim: true));
        // Scalars are held in locals to the end of the scope: TorchSharp may finalize an implicit one while libtorch reads it.
        using var two = 2.ToScalar();
        using var epsilon = eps.ToScalar();
        var variance = centered.pow(two).mean([-1L], keepdim: true);
        return (centered / variance.add(epsilon, HeldScalars.One).sqrt() * weight).Plus(bias).MoveToOuterDisposeScope();
    }

    /// <summary>The exact GELU the graph computes: x · (1 + erf(x / √2)) · 0.5.</summary>
    public static Tensor Gelu(Tensor x)
    {
        using var scope = NewDisposeScope();
        using var root2 = Math.Sqrt(2.0).ToScalar();
        using var one = 1.0.ToScalar();
        using var half = 0.5.ToScalar();
        return x.mul(x.div(root2).erf().add(one, HeldScalars.One)).mul(half).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The additive attention mask [B, 1, 1, T] from a padding mask [B, T] (1 or true = a real token):
    /// (1 − mask) · <paramref name="maskedScore"/>, added to every head's scores before the softmax.
    /// </summary>
    public static Tensor AdditiveMask(Tensor attentionMask, double maskedScore, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(attentionMask);
        using var scope = NewDisposeScope();
        var mask = attentionMask.to(dtype).unsqueeze(1).unsqueeze(2);
        using var one = 1.0.ToScalar();
        using var score = maskedScore.ToScalar();
        return mask.neg().add(one, HeldScalars.One).mul(score).MoveToOuterDisposeScope();
    }
}
