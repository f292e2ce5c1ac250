using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>
/// The first pipeline stage: token ids [B, T] (and token types) to hidden states [B, T, hidden] =
/// LayerNorm(word + token type + position), positions 0…T−1 in every row.
/// </summary>
public sealed class BertEmbeddings : BertStage
{
    private BertEmbeddings(BertConfig config, BertEmbeddingNames names, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype)
        : base(config, "embeddings", device, dtype)
    {
        Names = names;
        try
        {
            Word = Take(tensors, names.Word, "word embeddings", config.VocabSize, config.HiddenSize);
            Position = Take(tensors, names.Position, "position embeddings", config.MaxPositionEmbeddings, config.HiddenSize);
            TokenType = Take(tensors, names.TokenType, "token type embeddings", config.TypeVocabSize, config.HiddenSize);
            NormWeight = Take(tensors, names.NormWeight, "LayerNorm weight", config.HiddenSize);
            NormBias = Take(tensors, names.NormBias, "LayerNorm bias", config.HiddenSize);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public BertEmbeddingNames Names { get; }

    /// <summary>[vocab, hidden].</summary>
    public Tensor Word { get; }

    /// <summary>[max_positions, hidden].</summary>
    public Tensor Position { get; }

    /// <summary>[type_vocab, hidden].</summary>
    public Tensor TokenType { get; }

    public Tensor NormWeight { get; }

    public Tensor NormBias { get; }

    /// <summary>Builds the stage from tensors by checkpoint name (others are ignored); weights share storage with them when no conversion is needed.</summary>
    public static BertEmbeddings FromTensors(BertConfig config, BertEmbeddingNames names, IReadOnlyDictionary<string, Tensor> tensors,
        Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(tensors);
        return new BertEmbeddings(config, names, tensors, device, dtype);
    }

    /// <summary>
    /// Token ids [B, T] (int64) and token types [B, T] (int64; all zeros when null) to hidden states [B, T, hidden]
    /// in the caller's dispose scope. The inputs are not disposed.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor? tokenTypeIds = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ThrowIfDisposed();
        CheckIds(inputIds, nameof(inputIds), "Token ids", Config.VocabSize);
        var (batch, length) = (inputIds.shape[0], inputIds.shape[1]);
        if (length > Config.MaxPositionEmbeddings)
        {
            throw new ArgumentException($"Sequences of {length} tokens are longer than the {Config.MaxPositionEmbeddings} positions the model has.", nameof(inputIds));
        }
        if (tokenTypeIds is not null)
        {
            CheckIds(tokenTypeIds, nameof(tokenTypeIds), "Token type ids", Config.TypeVocabSize);
            if (!tokenTypeIds.shape.SequenceEqual(inputIds.shape))
            {
                throw new ArgumentException(
                    $"Token type ids have shape [{string.Join(", ", tokenTypeIds.shape)}]; the token ids have [{batch}, {length}].", nameof(tokenTypeIds));
            }
        }

        using var scope = NewDisposeScope();
        var ids = inputIds.to(Device);
        var types = tokenTypeIds?.to(Device) ?? zeros_like(ids);
        // The graph's order: (word + token type) + position.
        var x = Lookup(Word, ids, batch, length).Plus(Lookup(TokenType, types, batch, length));
        x = x.Plus(Position.narrow(0, 0, length).unsqueeze(0));
        return BertOps.LayerNorm(x, NormWeight, NormBias, Config.LayerNormEps).MoveToOuterDisposeScope();
    }

    private static Tensor Lookup(Tensor table, Tensor ids, long batch, long length) =>
        table.index_select(0, ids.reshape(-1)).view(batch, length, table.shape[1]);

    private static void CheckIds(Tensor ids, string parameter, string what, int limit)
    {
        if (ids.dtype != ScalarType.Int64 || ids.dim() != 2)
        {
            throw new ArgumentException($"{what} must be int64 of shape [batch, length]; got {ids.dtype} [{string.Join(", ", ids.shape)}].", parameter);
        }
        if (ids.numel() == 0)
        {
            return;
        }
        using var scope = NewDisposeScope();
        var min = ids.min().item<long>();
        var max = ids.max().item<long>();
        if (min < 0 || max >= limit)
        {
            throw new ArgumentOutOfRangeException(parameter, $"{what} hold {(min < 0 ? min : max)}, outside 0…{limit - 1}.");
        }
    }
}
