using TorchSharp;

namespace Shears.Pruning;

/// <summary>
/// Scalars that live as long as the process. TorchSharp converts plain numbers (and the implicit
/// alpha of tensor + tensor and tensor − tensor) to temporary Scalar objects that the garbage
/// collector may finalize while libtorch still reads them; in training, with frequent collections,
/// that failed runs at random ("Expected false to be true" from Scalar::toFloat). Hot paths pass
/// these instead, or hold a local Scalar to the end of their scope.
/// </summary>
public static class HeldScalars
{
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar Zero = 0.0.ToScalar();
    public static readonly Scalar Two = 2.ToScalar();

    /// <summary>a + b with a held alpha.</summary>
    public static torch.Tensor Plus(this torch.Tensor a, torch.Tensor b) => a.add(b, One);

    /// <summary>a − b as a + (−b) with a held alpha (sub takes no alpha here).</summary>
    public static torch.Tensor Minus(this torch.Tensor a, torch.Tensor b) => a.add(b.neg(), One);
}
