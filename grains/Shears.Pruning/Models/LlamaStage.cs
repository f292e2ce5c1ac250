using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>One pipeline stage of a LLaMA-family model (the embedding, one decoder layer, or the head): its weights and a forward pass.</summary>
public abstract class LlamaStage : TensorStage
{
    private protected LlamaStage(LlamaConfig config, string description, Device device, ScalarType dtype)
        : base(description, device, dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
    }

    public LlamaConfig Config { get; }

    /// <summary>Runs the stage. The result belongs to the caller's dispose scope; the input is not disposed.</summary>
    public abstract Tensor Forward(Tensor input);

    /// <summary><see cref="TensorStage.TakeWeight"/> of a required weight.</summary>
    private protected Tensor Take(IReadOnlyDictionary<string, Tensor> tensors, string name, params long[] shape) =>
        TakeWeight(tensors, name, null, required: true, shape)!;

    private protected Tensor? TakeOptional(IReadOnlyDictionary<string, Tensor> tensors, string name, bool required, params long[] shape) =>
        TakeWeight(tensors, name, null, required, shape);
}
