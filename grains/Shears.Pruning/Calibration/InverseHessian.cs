using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// The factor of the inverse Hessian that SparseGPT's and GPTQ's column sweeps read: U upper triangular with
/// UᵀU = (H + λI)⁻¹, where row j of U is the j-th row of the inverse Hessian of the columns j.. still to be visited,
/// divided by its diagonal's square root.
/// </summary>
internal static class InverseHessian
{
    internal enum Failure { None, Hessian, Inverse }

    /// <summary>
    /// The checks both sweeps make of the statistics a weight of <paramref name="cols"/> input columns is calibrated
    /// with; <paramref name="method"/> names the algorithm in the messages.
    /// </summary>
    public static void CheckStatistics(InputStatistics stats, long cols, string tensorName, string method)
    {
        ArgumentNullException.ThrowIfNull(stats);
        if (stats.Features != cols)
            throw new ArgumentException(
                $"tensor '{tensorName}' has {cols} input columns but its calibration statistics have width {stats.Features}", nameof(stats));
        if (!stats.HasGram)
            throw new ArgumentException(
                $"tensor '{tensorName}': {method} needs the Gram matrix of the inputs; gather the statistics with withGram: true", nameof(stats));
        if (stats.Samples == 0)
            throw new ArgumentException($"tensor '{tensorName}': no calibration inputs were added to its statistics", nameof(stats));
    }

    public static void CheckDampening(double dampening)
    {
        if (!(dampening >= 0) || double.IsInfinity(dampening))
            throw new ArgumentOutOfRangeException(nameof(dampening), dampening, "dampening must be a finite number ≥ 0 (a fraction of the mean diagonal)");
    }

    /// <summary>
    /// U (fp32, on <paramref name="h"/>'s device) from the fp64 Hessian <paramref name="h"/>, which is changed in place:
    /// a dead input (H_jj = 0) gets H_jj = 1 and its column of <paramref name="w"/> is zeroed, then
    /// λ = dampening·mean(diag H) is added to the diagonal. Null, with the step that failed, when a Cholesky
    /// factorization finds a matrix that is not positive definite; the dead columns are zeroed either way.
    /// </summary>
    public static Tensor? UpperFactor(Tensor h, Tensor w, double dampening, out Failure failure)
    {
        var diagonal = h.diagonal();
        var dead = diagonal.eq(0);
        diagonal.masked_fill_(dead, HeldScalars.One);
        w.masked_fill_(dead.unsqueeze(0), HeldScalars.Zero);
        using var lambda = (dampening * diagonal.mean().item<double>()).ToScalar(); // held to the end: implicit Scalars can be finalized mid-call
        diagonal.add_(lambda, HeldScalars.One);

        var (lower, info) = linalg.cholesky_ex(h);
        if (info.item<int>() != 0)
        {
            failure = Failure.Hessian;
            return null;
        }
        var inverse = cholesky_inverse(lower);
        var (inverseLower, inverseInfo) = linalg.cholesky_ex(inverse);
        if (inverseInfo.item<int>() != 0)
        {
            failure = Failure.Inverse;
            return null;
        }
        failure = Failure.None;
        return inverseLower.t().to(ScalarType.Float32).contiguous();
    }
}
