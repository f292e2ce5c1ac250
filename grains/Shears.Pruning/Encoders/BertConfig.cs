using System.Buffers.Binary;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;

namespace Shears.Pruning.Encoders;

/// <summary>
/// The shape of a BERT encoder, with Hugging Face's names. The arithmetic constants are those of the exported
/// all-MiniLM-L6-v2 graph (opset 13), read off its Constant nodes: LayerNorm epsilon fp32(1e-12), the padding mask
/// (1 − mask)·−10000 added to the scores, scores divided by √head_dim, exact (erf) GELU.
/// </summary>
public sealed record BertConfig(
    int VocabSize,
    int HiddenSize,
    int NumHiddenLayers,
    int NumAttentionHeads,
    int IntermediateSize,
    int MaxPositionEmbeddings,
    int TypeVocabSize,
    double LayerNormEps = 1e-12,
    double MaskedScore = -10000.0,
    int AttentionHeadSize = 0)
{
    /// <summary>sentence-transformers/all-MiniLM-L6-v2.</summary>
    public static BertConfig MiniLmL6V2 { get; } = new(30_522, 384, 6, 12, 1536, 512, 2);

    /// <summary>
    /// Width of one attention head: <see cref="AttentionHeadSize"/> when set (a model whose heads were removed keeps its
    /// head width while its attention width shrinks below the hidden size), hidden_size / num_attention_heads otherwise.
    /// </summary>
    public int HeadDim => AttentionHeadSize > 0 ? AttentionHeadSize : HiddenSize / NumAttentionHeads;

    public void Validate()
    {
        void Positive(int value, string name)
        {
            if (value <= 0)
            {
                throw new ArgumentException($"BERT config: {name} must be positive; got {value}.");
            }
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(IntermediateSize, "intermediate_size");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        Positive(TypeVocabSize, "type_vocab_size");
        if (AttentionHeadSize < 0)
        {
            throw new ArgumentException($"BERT config: attention_head_size must be positive; got {AttentionHeadSize}.");
        }
        if (AttentionHeadSize == 0 && HiddenSize % NumAttentionHeads != 0)
        {
            throw new ArgumentException($"BERT config: hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumAttentionHeads}.");
        }
        if (!(LayerNormEps > 0) || !double.IsFinite(LayerNormEps))
        {
            throw new ArgumentException($"BERT config: layer_norm_eps must be positive and finite; got {LayerNormEps}.");
        }
    }

    /// <summary>
    /// The config of a Hugging Face BERT graph exported to ONNX: sizes from the embedding and matrix shapes, layers
    /// from <see cref="OnnxModel.FindPrunable"/>, heads from the shape the graph reshapes the query to
    /// ([batch, length, heads, head_dim]). The constants keep their defaults (see the type's remarks).
    /// </summary>
    /// <exception cref="CheckpointFormatException">The graph is not a BERT encoder this type can describe.</exception>
    public static BertConfig FromOnnx(OnnxModel model) => FromOnnx(model, BertWeightNames.FromOnnx(model));

    /// <summary><see cref="FromOnnx(OnnxModel)"/> with the weight names already found (<see cref="BertWeightNames.FromOnnx"/>).</summary>
    public static BertConfig FromOnnx(OnnxModel model, BertWeightNames names)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(names);
        long[] Dims(string name) => model.FindInitializer(name)!.Dims is { Length: 2 } dims
            ? dims
            : throw new CheckpointFormatException(model.FilePath, name, $"expected a matrix; the initializer has dims [{string.Join(", ", model.FindInitializer(name)!.Dims)}]");
        var word = Dims(names.Embeddings.Word);
        var position = Dims(names.Embeddings.Position);
        var tokenType = Dims(names.Embeddings.TokenType);
        var intermediate = Dims(names.Layers[0].Intermediate);
        var hidden = (int)word[1];
        var (heads, headDim) = HeadsFromGraph(model, names.Layers[0].Query, Dims(names.Layers[0].Query)[1]);
        var config = new BertConfig((int)word[0], hidden, names.Layers.Count, heads, (int)intermediate[1], (int)position[0], (int)tokenType[0],
            AttentionHeadSize: heads * headDim == hidden ? 0 : headDim);
        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CheckpointFormatException(model.FilePath, null, e.Message, e);
        }
        return config;
    }

    /// <summary>
    /// Follows the query projection (MatMul, then the bias Add) to the Reshape that splits heads; its shape is a
    /// Concat of [batch], [length] and two one-element int64 initializers: [heads], [head_dim], whose product is the
    /// query's width (the hidden size, or less once heads were removed).
    /// </summary>
    private static (int Heads, int HeadDim) HeadsFromGraph(OnnxModel model, string queryWeight, long width)
    {
        if (BertHeadShapes.Find(model, queryWeight) is { } shape && ScalarInt64(model, shape.Heads) is { } heads && ScalarInt64(model, shape.HeadDim) is { } headDim
            && heads > 0 && headDim > 0 && heads * headDim == width)
        {
            return ((int)heads, (int)headDim);
        }
        throw new CheckpointFormatException(model.FilePath, queryWeight,
            "cannot find the number of attention heads: the query projection does not lead to a Reshape to [batch, length, heads, head_dim] with constant heads and head_dim; build the encoder from a BertConfig instead");
    }

    private static long? ScalarInt64(OnnxModel model, string name) =>
        model.FindInitializer(name) is { ElementType: OnnxElementType.Int64, ElementCount: 1, RawDataOffset: not null } init
            ? BinaryPrimitives.ReadInt64LittleEndian(model.ReadRawData(init.Name))
            : null;
}

/// <summary>
/// Where an exported BERT graph keeps a projection's head split: the Reshape after the query, key or value MatMul (and
/// its bias Add) takes its shape from a Concat of [batch], [length] and two one-element int64 initializers, [heads] and
/// [head_dim]. Their names are what a head removal rewrites.
/// </summary>
public static class BertHeadShapes
{
    /// <summary>The [heads] and [head_dim] initializers of the Reshape that the projection with weight <paramref name="weight"/> feeds; null when the graph has none.</summary>
    public static (string Heads, string HeadDim)? Find(OnnxModel model, string weight)
    {
        ArgumentNullException.ThrowIfNull(model);
        var (producers, consumers) = Index(model);
        IEnumerable<OnnxNode> After(OnnxNode node) => node.Outputs.SelectMany(o => consumers.GetValueOrDefault(o) ?? []);
        var matmul = model.Nodes.FirstOrDefault(n => n.OpType == "MatMul" && n.Inputs.Count == 2 && n.Inputs[1] == weight);
        var reshape = matmul is null ? null : After(matmul).Concat(After(matmul).SelectMany(After)).FirstOrDefault(n => n.OpType == "Reshape");
        if (reshape is not null && reshape.Inputs.Count == 2 && producers.GetValueOrDefault(reshape.Inputs[1]) is { OpType: "Concat" } concat
            && concat.Inputs.Count == 4 && model.FindInitializer(concat.Inputs[2]) is not null && model.FindInitializer(concat.Inputs[3]) is not null)
        {
            return (concat.Inputs[2], concat.Inputs[3]);
        }
        return null;
    }

    /// <summary>
    /// The [width] initializer of the Reshape that merges the heads back ([batch, length, heads·head_dim]) before the
    /// attention-output MatMul with weight <paramref name="weight"/>; null when the graph has none.
    /// </summary>
    public static string? FindMerge(OnnxModel model, string weight)
    {
        ArgumentNullException.ThrowIfNull(model);
        var (producers, _) = Index(model);
        var matmul = model.Nodes.FirstOrDefault(n => n.OpType == "MatMul" && n.Inputs.Count == 2 && n.Inputs[1] == weight);
        if (matmul is not null && producers.GetValueOrDefault(matmul.Inputs[0]) is { OpType: "Reshape" } reshape && reshape.Inputs.Count == 2
            && producers.GetValueOrDefault(reshape.Inputs[1]) is { OpType: "Concat" } concat && concat.Inputs.Count == 3
            && model.FindInitializer(concat.Inputs[2]) is not null)
        {
            return concat.Inputs[2];
        }
        return null;
    }

    private static (Dictionary<string, OnnxNode> Producers, Dictionary<string, List<OnnxNode>> Consumers) Index(OnnxModel model)
    {
        var producers = new Dictionary<string, OnnxNode>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        foreach (var node in model.Nodes)
        {
            foreach (var output in node.Outputs)
            {
                producers[output] = node;
            }
            foreach (var input in node.Inputs)
            {
                if (!consumers.TryGetValue(input, out var list))
                {
                    consumers[input] = list = [];
                }
                list.Add(node);
            }
        }
        return (producers, consumers);
    }
}
