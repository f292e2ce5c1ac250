using Shears.Pruning.Models;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>One pipeline stage of a BERT encoder (the embeddings, or one encoder layer): its weights and a forward pass.</summary>
public abstract class BertStage : TensorStage
{
    private protected BertStage(BertConfig config, string description, Device device, ScalarType dtype)
        : base(description, device, dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
    }

    public BertConfig Config { get; }

    /// <summary><see cref="TensorStage.TakeWeight"/> of a required weight; <paramref name="role"/> names its part in messages.</summary>
    private protected Tensor Take(IReadOnlyDictionary<string, Tensor> tensors, string name, string role, params long[] shape) =>
        TakeWeight(tensors, name, role, required: true, shape)!;
}
