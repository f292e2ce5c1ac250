using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// Layer-wise distillation's term (--distill hidden): how far a pruned layer's output hidden states are from the dense
/// model's, token by token, relative to the dense state's size, so that layers whose states differ in scale (a decoder's
/// residual stream grows with depth) weigh alike.
/// </summary>
public static class HiddenStateLoss
{
    /// <summary>
    /// Σ over the real tokens of ‖student − teacher‖² / ‖teacher‖² (each token's state a vector over the last axis);
    /// <paramref name="realTokens"/> [batch, length] is 1 for a real token and 0 for padding. Differentiable in the student.
    /// </summary>
    public static Tensor RelativeErrorSum(Tensor student, Tensor teacher, Tensor realTokens)
    {
        ArgumentNullException.ThrowIfNull(student);
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(realTokens);
        if (!student.shape.SequenceEqual(teacher.shape))
            throw new ArgumentException($"student states [{string.Join(", ", student.shape)}] and teacher states [{string.Join(", ", teacher.shape)}] differ in shape");
        using var scope = NewDisposeScope();
        using var tiny = 1e-12.ToScalar(); // held: an implicit Scalar may be finalized while libtorch reads it
        var error = (student - teacher).square().sum([-1]);
        var size = teacher.detach().square().sum([-1]).clamp_min(tiny);
        var weights = realTokens.to(student.dtype);
        return (error / size * weights).sum().MoveToOuterDisposeScope();
    }
}
