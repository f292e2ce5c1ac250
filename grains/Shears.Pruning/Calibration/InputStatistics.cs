using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// What the calibration inputs of one linear layer add up to, accumulated batch by batch in fp64:
/// the sum of squares of every input feature (Wanda's ‖X_j‖₂²) and, when asked for, the Gram
/// matrix Σ xᵀx over all input vectors (SparseGPT's Hessian). Memory is O(in), or O(in²) with the
/// Gram matrix, whatever the number of samples.
/// </summary>
/// <remarks>
/// A sample is one input vector (one token's activations): a batch [..., in] adds
/// the product of its leading dimensions. The accumulators are owned here and leave every dispose
/// scope; dispose the statistics when the layer is done.
/// </remarks>
public sealed class InputStatistics : IDisposable
{
    private readonly Tensor _sumOfSquares;
    private readonly Tensor? _gram;
    private bool _disposed;

    /// <param name="features">The layer's input width (columns of its weight).</param>
    /// <param name="withGram">Also accumulate Σ xᵀx, which SparseGPT needs and Wanda does not.</param>
    /// <param name="device">Where the accumulators live; the CPU when null.</param>
    public InputStatistics(long features, bool withGram, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(features);
        Features = features;
        Device = device ?? CPU;
        _sumOfSquares = zeros(features, float64, Device).DetachFromDisposeScope();
        if (withGram) _gram = zeros(features, features, float64, Device).DetachFromDisposeScope();
    }

    public long Features { get; }

    public Device Device { get; }

    /// <summary>Input vectors seen so far.</summary>
    public long Samples { get; private set; }

    public bool HasGram => _gram is not null;

    /// <summary>
    /// Adds a batch of inputs [..., in] (any floating dtype, any device). A batch that holds NaN or
    /// infinity is refused and leaves the statistics as they were.
    /// </summary>
    public void Add(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (x.dim() == 0 || x.shape[^1] != Features)
            throw new ArgumentException(
                $"calibration inputs of shape {ShapeText(x.shape)} do not end in the layer's input width {Features}", nameof(x));
        if (!x.is_floating_point())
            throw new ArgumentException($"calibration inputs must be floating point, got {x.dtype}", nameof(x));

        using var scope = NewDisposeScope();
        var rows = x.detach().reshape(-1, Features).to(float64, Device);
        var squares = rows.square().sum(dim: 0); // sum(0) would bind 0 to the ScalarType overload and sum everything
        // A single non-finite input poisons every statistic; checked before anything is added.
        if (!squares.isfinite().all().item<bool>())
            throw new ArgumentException("calibration inputs hold NaN or infinity", nameof(x));
        _sumOfSquares.add_(squares, HeldScalars.One);
        _gram?.addmm_(rows.t(), rows);
        Samples += rows.shape[0];
    }

    /// <summary>Adds statistics gathered elsewhere (another batch stream over the same layer).</summary>
    public void Merge(InputStatistics other)
    {
        ArgumentNullException.ThrowIfNull(other);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (other.Features != Features)
            throw new ArgumentException($"statistics of width {other.Features} cannot merge into width {Features}", nameof(other));
        if (HasGram && !other.HasGram)
            throw new ArgumentException("these statistics keep a Gram matrix and the others do not", nameof(other));

        using var scope = NewDisposeScope();
        _sumOfSquares.add_(other._sumOfSquares.to(Device), HeldScalars.One);
        if (_gram is not null) _gram.add_(other._gram!.to(Device), HeldScalars.One);
        Samples += other.Samples;
    }

    /// <summary>Σ x_j² per input feature, on the host.</summary>
    public double[] SumOfSquares()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        return _sumOfSquares.cpu().data<double>().ToArray();
    }

    /// <summary>‖X_j‖₂ = sqrt(Σ x_j²) per input feature, on the host: Wanda's activation norms.</summary>
    public double[] ColumnNorms()
    {
        var norms = SumOfSquares();
        for (int j = 0; j < norms.Length; j++) norms[j] = Math.Sqrt(norms[j]);
        return norms;
    }

    /// <summary>A copy of the Gram matrix Σ xᵀx [in, in], fp64, on <paramref name="device"/> (this one's when null).</summary>
    public Tensor Gram(Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_gram is null)
            throw new InvalidOperationException("these statistics were gathered without the Gram matrix (withGram: false)");
        return _gram.to(device ?? Device, copy: true);
    }

    /// <summary>
    /// The Hessian of the layer's squared reconstruction error, H = 2·XᵀX / n [in, in], fp64 (the
    /// SparseGPT paper's scaling; n = <see cref="Samples"/>).
    /// </summary>
    public Tensor Hessian(Device? device = null)
    {
        if (Samples == 0) throw new InvalidOperationException("no calibration inputs were added");
        var gram = Gram(device);
        using var scale = (2.0 / Samples).ToScalar(); // held: implicit Scalars can be finalized mid-call
        return gram.mul_(scale);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _sumOfSquares.Dispose();
        _gram?.Dispose();
    }

    internal static string ShapeText(ReadOnlySpan<long> shape) => $"[{string.Join(", ", shape.ToArray())}]";
}
