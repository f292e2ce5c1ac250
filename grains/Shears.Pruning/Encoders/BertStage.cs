using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>
/// One pipeline stage of a BERT encoder (the embeddings, or one encoder layer): its weights by checkpoint name
/// and a forward pass. Plain tensors rather than torch.nn modules, so that a shard grain builds a stage from the
/// tensors it holds and writes them back by name.
/// </summary>
public abstract class BertStage : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    private bool _disposed;

    private protected BertStage(BertConfig config, string description, Device device, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(device);
        config.Validate();
        if (!is_floating_point(dtype))
        {
            throw new ArgumentException($"An encoder computes in a floating-point type, not {dtype}.", nameof(dtype));
        }
        Config = config;
        Description = description;
        Device = device;
        DType = dtype;
    }

    public BertConfig Config { get; }

    /// <summary>What the stage is, for messages: "embeddings", "encoder layer 3".</summary>
    public string Description { get; }

    public Device Device { get; }

    public ScalarType DType { get; }

    /// <summary>
    /// The stage's weights by checkpoint name (for an ONNX export, the initializer names, numbers included). These
    /// are the tensors the forward pass reads: set requires_grad on them to train, update them in place, write them
    /// back by name.
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
    /// Takes <paramref name="name"/> from <paramref name="tensors"/> on the stage's device and dtype. When no
    /// conversion is needed the weight shares storage with the given tensor; the caller still owns its tensor.
    /// </summary>
    private protected Tensor Take(IReadOnlyDictionary<string, Tensor> tensors, string name, string role, params long[] shape)
    {
        if (!tensors.TryGetValue(name, out var source))
        {
            throw new ArgumentException($"Tensor '{name}' ({role}) is missing; the {Description} needs it.");
        }
        ArgumentNullException.ThrowIfNull(source, name);
        if (!source.shape.SequenceEqual(shape))
        {
            throw new ArgumentException(
                $"Tensor '{name}' ({role} of the {Description}) has shape [{string.Join(", ", source.shape)}]; the config gives [{string.Join(", ", shape)}].");
        }
        if (!source.is_floating_point())
        {
            throw new ArgumentException($"Tensor '{name}' ({role}) is {source.dtype}; weights are floating-point.");
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

    private protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var weight in _parameters.Values)
        {
            weight.Dispose();
        }
        GC.SuppressFinalize(this);
    }

    public override string ToString() => Description;
}
