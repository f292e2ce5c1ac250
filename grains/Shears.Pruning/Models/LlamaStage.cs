using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// One pipeline stage of a LLaMA-family model: its weights by Hugging Face name and a forward pass.
/// Plain tensors rather than torch.nn modules, so that a shard grain builds a stage from the tensors
/// it holds and writes them back by name.
/// </summary>
public abstract class LlamaStage : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    private readonly HashSet<string> _borrowed = new(StringComparer.Ordinal);
    private readonly List<Tensor> _buffers = [];
    private bool _disposed;

    private protected LlamaStage(LlamaConfig config, string description, Device device, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(device);
        config.Validate();
        if (!is_floating_point(dtype))
        {
            throw new ArgumentException($"A model computes in a floating-point type, not {dtype}.", nameof(dtype));
        }
        Config = config;
        Description = description;
        Device = device;
        DType = dtype;
    }

    public LlamaConfig Config { get; }

    /// <summary>What the stage is, for messages: "embedding", "decoder layer 3", "head".</summary>
    public string Description { get; }

    public Device Device { get; }

    public ScalarType DType { get; }

    /// <summary>
    /// The stage's weights by Hugging Face name. These are the tensors the forward pass reads: set
    /// requires_grad on them to train, update them in place, write them back by name.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>Runs the stage. The result belongs to the caller's dispose scope; the input is not disposed.</summary>
    public abstract Tensor Forward(Tensor input);

    /// <summary>Turns gradient tracking of every weight on or off.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var weight in _parameters.Values)
        {
            weight.requires_grad_(requiresGrad);
        }
    }

    /// <summary>
    /// Takes <paramref name="name"/> from <paramref name="tensors"/> on the stage's device and dtype.
    /// When no conversion is needed the weight shares storage with the given tensor (no copy), so an
    /// update through <see cref="Parameters"/> shows in the caller's tensor; the caller still owns and
    /// disposes its own tensor.
    /// </summary>
    private protected Tensor Take(IReadOnlyDictionary<string, Tensor> tensors, string name, params long[] shape) =>
        TakeOptional(tensors, name, required: true, shape)!;

    private protected Tensor? TakeOptional(IReadOnlyDictionary<string, Tensor> tensors, string name, bool required, params long[] shape)
    {
        if (!tensors.TryGetValue(name, out var source))
        {
            return required
                ? throw new ArgumentException($"Tensor '{name}' is missing; the {Description} needs it.")
                : null;
        }
        ArgumentNullException.ThrowIfNull(source, name);
        if (!source.shape.SequenceEqual(shape))
        {
            throw new ArgumentException(
                $"Tensor '{name}' has shape [{string.Join(", ", source.shape)}]; the config gives [{string.Join(", ", shape)}].");
        }
        if (!source.is_floating_point())
        {
            throw new ArgumentException($"Tensor '{name}' is {source.dtype}; weights are floating-point.");
        }
        using var scope = NewDisposeScope();
        // detach: the stage's tensor has its own requires_grad and autograd history, whatever the source's.
        var weight = source.detach().to(DType, Device).DetachFromDisposeScope();
        _parameters.Add(name, weight);
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
