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
        var centered = x - x.mean([-1L], keepdim: true);
        var variance = centered.pow(2).mean([-1L], keepdim: true);
        return (centered / (variance + eps).sqrt() * weight + bias).MoveToOuterDisposeScope();
    }

    /// <summary>The exact GELU the graph computes: x · (1 + erf(x / √2)) · 0.5.</summary>
    public static Tensor Gelu(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x * ((x / Math.Sqrt(2.0)).erf() + 1.0) * 0.5).MoveToOuterDisposeScope();
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
        return ((1.0 - mask) * maskedScore).MoveToOuterDisposeScope();
    }
}
