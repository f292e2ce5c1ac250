using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// The last pipeline stage: hidden states [B, T, hidden] to logits [B, T, vocab] by the final RMSNorm
/// (model.norm.weight) and lm_head.weight, or the embedding matrix when tie_word_embeddings is set.
/// </summary>
public sealed class LlamaHead : LlamaStage
{
    private LlamaHead(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, LlamaEmbedding? tiedTo, Device device, ScalarType dtype)
        : base(config, "head", device, dtype)
    {
        try
        {
            NormWeight = Take(tensors, LlamaWeights.FinalNormName, config.HiddenSize);
            if (tiedTo is not null)
            {
                OutputWeight = Borrow(LlamaWeights.EmbeddingName, tiedTo.Weight);
            }
            else
            {
                // A tied checkpoint may still carry lm_head.weight; transformers ignores it, and so does Shears.
                OutputWeight = Take(tensors, config.TieWordEmbeddings ? LlamaWeights.EmbeddingName : LlamaWeights.LmHeadName,
                    config.VocabSize, config.HiddenSize);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>model.norm.weight, [hidden].</summary>
    public Tensor NormWeight { get; }

    /// <summary>lm_head.weight, or model.embed_tokens.weight when tied: [vocab, hidden].</summary>
    public Tensor OutputWeight { get; }

    /// <summary>
    /// Builds the stage from tensors by Hugging Face name: model.norm.weight and lm_head.weight, or
    /// model.embed_tokens.weight when the config ties the embeddings (a head grain then holds its own copy).
    /// </summary>
    public static LlamaHead FromTensors(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return new LlamaHead(config, tensors, null, device, dtype);
    }

    /// <summary>A head that uses <paramref name="embedding"/>'s weight itself, so a training step updates one tied matrix.</summary>
    public static LlamaHead TiedTo(LlamaEmbedding embedding, IReadOnlyDictionary<string, Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(embedding);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!embedding.Config.TieWordEmbeddings)
        {
            throw new ArgumentException("The config does not tie the embeddings (tie_word_embeddings is false).", nameof(embedding));
        }
        return new LlamaHead(embedding.Config, tensors, embedding, embedding.Device, embedding.DType);
    }

    public override Tensor Forward(Tensor hidden)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ThrowIfDisposed();
        LlamaDecoderLayer.CheckHidden(hidden, Config, nameof(hidden));
        using var scope = NewDisposeScope();
        var normed = LlamaOps.RmsNorm(hidden, NormWeight, Config.RmsNormEps);
        return nn.functional.linear(normed, OutputWeight).MoveToOuterDisposeScope();
    }
}
