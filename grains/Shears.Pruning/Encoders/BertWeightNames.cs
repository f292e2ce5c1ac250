using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>The tensors of the embeddings stage, by checkpoint name.</summary>
public sealed record BertEmbeddingNames(string Word, string Position, string TokenType, string NormWeight, string NormBias)
{
    public static BertEmbeddingNames HuggingFace { get; } = new(
        "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias");

    public IReadOnlyList<string> All => [Word, Position, TokenType, NormWeight, NormBias];
}

/// <summary>
/// The tensors of one encoder layer, by checkpoint name. The six matrices are stored [in, out] (ONNX MatMul's
/// layout, y = x·W + b); in an exported graph they often have bare numbers for names.
/// </summary>
public sealed record BertLayerNames(
    string Query, string QueryBias,
    string Key, string KeyBias,
    string Value, string ValueBias,
    string AttentionOutput, string AttentionOutputBias,
    string AttentionNormWeight, string AttentionNormBias,
    string Intermediate, string IntermediateBias,
    string Output, string OutputBias,
    string OutputNormWeight, string OutputNormBias)
{
    public IReadOnlyList<string> All =>
    [
        Query, QueryBias, Key, KeyBias, Value, ValueBias, AttentionOutput, AttentionOutputBias, AttentionNormWeight, AttentionNormBias,
        Intermediate, IntermediateBias, Output, OutputBias, OutputNormWeight, OutputNormBias,
    ];

    /// <summary>The six matrices, in block order: query, key, value, attention output, intermediate, output.</summary>
    public IReadOnlyList<string> Matrices => [Query, Key, Value, AttentionOutput, Intermediate, Output];
}

/// <summary>Where every weight of a BERT encoder sits in a checkpoint.</summary>
public sealed record BertWeightNames(BertEmbeddingNames Embeddings, IReadOnlyList<BertLayerNames> Layers)
{
    private static readonly string[] Roles = ["query", "key", "value", "attention.output", "intermediate", "output"];

    /// <summary>
    /// Names of a Hugging Face BERT graph exported to ONNX. The MatMul weights are found and given their roles by
    /// <see cref="OnnxModel.FindPrunable"/> (which reads the module from the bias each MatMul feeds); biases and
    /// LayerNorms carry their Hugging Face names.
    /// </summary>
    /// <exception cref="CheckpointFormatException">A weight is missing, or a matrix is not a MatMul weight stored [in, out].</exception>
    public static BertWeightNames FromOnnx(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var embeddings = BertEmbeddingNames.HuggingFace;
        foreach (var name in embeddings.All)
        {
            Require(model, name, "the embeddings");
        }

        var prunable = model.FindPrunable();
        var layerCount = prunable.Count == 0 ? 0 : prunable.Max(p => p.Layer!.Value) + 1;
        if (layerCount == 0)
        {
            throw new CheckpointFormatException(model.FilePath, null, "no encoder layer found: no MatMul weight belongs to a module named encoder.layer.N");
        }
        var layers = new List<BertLayerNames>(layerCount);
        for (var i = 0; i < layerCount; i++)
        {
            var matrices = new Dictionary<string, OnnxPrunable>(StringComparer.Ordinal);
            foreach (var p in prunable.Where(p => p.Layer == i))
            {
                if (p.Role is { } role && Roles.Contains(role) && !p.OutputIsColumn)
                {
                    throw new CheckpointFormatException(model.FilePath, p.Name,
                        $"the {role} matrix of layer {i} is stored [out, in] ({p.OpType} with transB); the encoder reads MatMul weights stored [in, out]");
                }
                if (p.Role is { } r && !matrices.TryAdd(r, p))
                {
                    throw new CheckpointFormatException(model.FilePath, p.Name, $"layer {i} has two {r} matrices ({matrices[r].Name} and {p.Name})");
                }
            }
            string Matrix(string role) => matrices.TryGetValue(role, out var p)
                ? p.Name
                : throw new CheckpointFormatException(model.FilePath, null, $"encoder layer {i} has no {role} matrix among the MatMul weights");
            var prefix = $"encoder.layer.{i}.";
            var names = new BertLayerNames(
                Matrix("query"), prefix + "attention.self.query.bias",
                Matrix("key"), prefix + "attention.self.key.bias",
                Matrix("value"), prefix + "attention.self.value.bias",
                Matrix("attention.output"), prefix + "attention.output.dense.bias",
                prefix + "attention.output.LayerNorm.weight", prefix + "attention.output.LayerNorm.bias",
                Matrix("intermediate"), prefix + "intermediate.dense.bias",
                Matrix("output"), prefix + "output.dense.bias",
                prefix + "output.LayerNorm.weight", prefix + "output.LayerNorm.bias");
            foreach (var name in names.All)
            {
                Require(model, name, $"encoder layer {i}");
            }
            layers.Add(names);
        }
        return new BertWeightNames(embeddings, layers);
    }

    /// <summary>
    /// Reads fp32, fp16 or bf16 initializers of <paramref name="model"/> as tensors on <paramref name="device"/> in
    /// <paramref name="dtype"/>. The tensors are detached from any dispose scope: the caller disposes them.
    /// </summary>
    public static Dictionary<string, Tensor> Read(OnnxModel model, IEnumerable<string> names, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(device);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in names)
            {
                if (tensors.ContainsKey(name))
                {
                    continue;
                }
                var init = Require(model, name, "the encoder");
                // Typed as a checkpoint tensor: fp32, fp16 or bf16 raw_data or external data, widened exactly.
                if (init.ToTensorEntry(Path.GetFileName(model.FilePath)) is not { DType: TensorDType.F32 or TensorDType.F16 or TensorDType.BF16 } entry)
                {
                    throw new CheckpointFormatException(model.FilePath, name,
                        $"the encoder reads fp32, fp16 or bf16 weights stored as raw_data or external data; this one is {init.ElementType.ToOnnxName()} in {init.Storage}");
                }
                using var scope = NewDisposeScope();
                tensors.Add(name, Models.LlamaWeights.ToFloat32(entry, model.ReadRawData(name)).to(dtype, device).DetachFromDisposeScope());
            }
            return tensors;
        }
        catch
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
            throw;
        }
    }

    private static OnnxInitializer Require(OnnxModel model, string name, string who) =>
        model.FindInitializer(name) ?? throw new CheckpointFormatException(model.FilePath, name, $"the initializer is missing; {who} needs it");
}
