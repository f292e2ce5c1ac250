using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// What every pipeline stage (a LLaMA embedding, decoder layer or head; a BERT embedding or encoder layer) holds: its
/// weights by checkpoint name on one device and dtype, taken from the tensors a shard grain holds and written back by
/// name. Plain tensors rather than torch.nn modules.
/// </summary>
public abstract class TensorStage : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    private readonly HashSet<string> _borrowed = new(StringComparer.Ordinal);
    private readonly List<Tensor> _buffers = [];
    private bool _disposed;

    private protected TensorStage(string description, Device device, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!is_floating_point(dtype))
        {
            throw new ArgumentException($"A stage computes in a floating-point type, not {dtype}.", nameof(dtype));
        }
        Description = description;
        Device = device;
        DType = dtype;
    }

    /// <summary>What the stage is, for messages: "embedding", "decoder layer 3", "encoder layer 2".</summary>
    public string Description { get; }

    public Device Device { get; }

    public ScalarType DType { get; }

    /// <summary>
    /// The stage's weights by checkpoint name (for an ONNX export, the initializer names). These are the tensors the
    /// forward pass reads: set requires_grad on them to train, update them in place, write them back by name.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>Turns gradient tracking of every weight on or off.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var weight in _parameters.Values)
        {
            weight.requires_grad_(requiresGrad);
        }
    }

    /// <summary>
    /// Takes <paramref name="name"/> from <paramref name="tensors"/> on the stage's device and dtype (null when it is
    /// absent and not <paramref name="required"/>). When no conversion is needed the weight shares storage with the given
    /// tensor (no copy), so an update through <see cref="Parameters"/> shows in the caller's tensor; the caller still owns
    /// and disposes its own. <paramref name="role"/>, when given, says in messages what the tensor is for.
    /// </summary>
    private protected Tensor? TakeWeight(IReadOnlyDictionary<string, Tensor> tensors, string name, string? role, bool required, long[] shape)
    {
        string what = role is null ? $"'{name}'" : $"'{name}' ({role})";
        if (!tensors.TryGetValue(name, out var source))
        {
            return required ? throw new ArgumentException($"Tensor {what} is missing; the {Description} needs it.") : null;
        }
        ArgumentNullException.ThrowIfNull(source, name);
        if (!source.shape.SequenceEqual(shape))
        {
            throw new ArgumentException(
                $"Tensor {what} of the {Description} has shape [{string.Join(", ", source.shape)}]; the config gives [{string.Join(", ", shape)}].");
        }
        if (!source.is_floating_point())
        {
            throw new ArgumentException($"Tensor {what} is {source.dtype}; weights are floating-point.");
        }
        using var scope = NewDisposeScope();
        // detach: the stage's tensor has its own requires_grad and autograd history, whatever the source's.
        var weight = source.detach().to(DType, Device).DetachFromDisposeScope();
        if (!_parameters.TryAdd(name, weight))
        {
            weight.Dispose();
            throw new ArgumentException($"Tensor '{name}' is named for two weights of the {Description}.");
        }
        return weight;
    }

    /// <summary>Uses a weight another stage owns (a tied embedding); it is listed but not disposed here.</summary>
    private protected Tensor Borrow(string name, Tensor weight)
    {
        _parameters.Add(name, weight);
        _borrowed.Add(name);
        return weight;
    }

    /// <summary>A tensor the stage owns that is not a weight (rotary frequencies).</summary>
    private protected Tensor KeepBuffer(Tensor buffer)
    {
        _buffers.Add(buffer.DetachFromDisposeScope());
        return buffer;
    }

    private protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var (name, weight) in _parameters)
        {
            if (!_borrowed.Contains(name))
            {
                weight.Dispose();
            }
        }
        foreach (var buffer in _buffers)
        {
            buffer.Dispose();
        }
        GC.SuppressFinalize(this);
    }

    public override string ToString() => Description;
}
