using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>The first pipeline stage: token ids [B, T] (int64) to hidden states [B, T, hidden] by model.embed_tokens.weight.</summary>
public sealed class LlamaEmbedding : LlamaStage
{
    private LlamaEmbedding(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype)
        : base(config, "embedding", device, dtype)
    {
        try
        {
            Weight = Take(tensors, LlamaWeights.EmbeddingName, config.VocabSize, config.HiddenSize);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>model.embed_tokens.weight, [vocab, hidden].</summary>
    public Tensor Weight { get; }

    /// <summary>Builds the stage from tensors by Hugging Face name; the weight shares storage with the given tensor when no conversion is needed.</summary>
    public static LlamaEmbedding FromTensors(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return new LlamaEmbedding(config, tensors, device, dtype);
    }

    public override Tensor Forward(Tensor tokenIds)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        ThrowIfDisposed();
        if (tokenIds.dtype != ScalarType.Int64 || tokenIds.dim() != 2)
        {
            throw new ArgumentException(
                $"Token ids must be int64 of shape [batch, length]; got {tokenIds.dtype} [{string.Join(", ", tokenIds.shape)}].", nameof(tokenIds));
        }
        using var scope = NewDisposeScope();
        if (tokenIds.numel() > 0)
        {
            var min = tokenIds.min().item<long>();
            var max = tokenIds.max().item<long>();
            if (min < 0 || max >= Config.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokenIds),
                    $"Token id {(min < 0 ? min : max)} is outside the vocabulary of {Config.VocabSize} tokens.");
            }
        }
        var (batch, length) = (tokenIds.shape[0], tokenIds.shape[1]);
        var hidden = Weight.index_select(0, tokenIds.reshape(-1).to(Device)).view(batch, length, Config.HiddenSize);
        return hidden.MoveToOuterDisposeScope();
    }
}
