using Shears.Pruning.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// Checkpoint bytes to tensors, and the Hugging Face names of each pipeline stage's tensors, so a
/// grain that holds one stage reads only that stage's bytes.
/// </summary>
public static partial class LlamaWeights
{
    public const string EmbeddingName = "model.embed_tokens.weight";
    public const string FinalNormName = "model.norm.weight";
    public const string LmHeadName = "lm_head.weight";

    /// <summary>The prefix of every tensor of decoder layer <paramref name="layerIndex"/>: "model.layers.{i}.".</summary>
    public static string LayerPrefix(int layerIndex) => $"model.layers.{layerIndex}.";

    /// <summary>Names of the embedding stage's tensors.</summary>
    public static IReadOnlyList<string> EmbeddingNames() => [EmbeddingName];

    /// <summary>Names of the head stage's tensors: the final norm and lm_head, or the embedding when tied.</summary>
    public static IReadOnlyList<string> HeadNames(LlamaConfig config) =>
        [FinalNormName, config.TieWordEmbeddings ? EmbeddingName : LmHeadName];

    /// <summary>
    /// Names of decoder layer <paramref name="layerIndex"/>'s tensors that <paramref name="manifest"/> holds
    /// (the weights, and biases where the checkpoint has them).
    /// </summary>
    public static IReadOnlyList<string> LayerNames(CheckpointManifest manifest, int layerIndex)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var prefix = LayerPrefix(layerIndex);
        return manifest.Tensors.Select(t => t.Name).Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).ToArray();
    }

    /// <summary>
    /// The half of a decoder layer that reads tensor <paramref name="name"/> (under model.layers.{i}.): the MLP for the
    /// post-attention norm and mlp.*, the attention for everything else (the input norm, self_attn.*, buffers).
    /// </summary>
    public static LlamaLayerPart PartOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var match = LayerPrefixOf().Match(name);
        string leaf = match.Success ? name[match.Length..] : name;
        return leaf.StartsWith("post_attention_layernorm.", StringComparison.Ordinal) || leaf.StartsWith("mlp.", StringComparison.Ordinal)
            ? LlamaLayerPart.Mlp : LlamaLayerPart.Attention;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^model\.layers\.[0-9]+\.")]
    private static partial System.Text.RegularExpressions.Regex LayerPrefixOf();

    /// <summary>
    /// Whether <paramref name="name"/>, a tensor under model.layers.{i}., is one a decoder layer of
    /// <paramref name="config"/>'s model_type reads, or a buffer it recomputes (rotary_emb.inv_freq of older exports).
    /// </summary>
    public static bool IsLayerTensor(LlamaConfig config, string name)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(name);
        if (IsBuffer(name))
        {
            return true;
        }
        var match = LayerLeaf().Match(name);
        if (!match.Success)
        {
            return false;
        }
        var leaf = match.Groups[1].Value;
        return leaf switch
        {
            "input_layernorm.weight" or "post_attention_layernorm.weight" => true,
            "self_attn.q_norm.weight" or "self_attn.k_norm.weight" => config.QueryKeyNorm,
            _ => ProjectionLeaf().IsMatch(leaf),
        };
    }

    /// <summary>A layer tensor that holds no weight (the rotary inverse frequencies some older checkpoints saved).</summary>
    public static bool IsBuffer(string name) => name.EndsWith(".self_attn.rotary_emb.inv_freq", StringComparison.Ordinal);

    [System.Text.RegularExpressions.GeneratedRegex(@"^model\.layers\.\d+\.(.+)$")]
    private static partial System.Text.RegularExpressions.Regex LayerLeaf();

    [System.Text.RegularExpressions.GeneratedRegex(@"^(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.(weight|bias)$")]
    private static partial System.Text.RegularExpressions.Regex ProjectionLeaf();

    /// <summary>
    /// Reads the named tensors to <paramref name="device"/> as <paramref name="dtype"/>, one at a time.
    /// The caller owns the tensors (they belong to no dispose scope).
    /// </summary>
    public static Dictionary<string, Tensor> Read(CheckpointManifest manifest, IEnumerable<string> names, Device device, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(device);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in names)
            {
                if (!manifest.TryGet(name, out var entry))
                {
                    throw new CheckpointFormatException(manifest.Root, name, "is missing; a LLaMA-family checkpoint needs it");
                }
                if (result.ContainsKey(name))
                {
                    continue;
                }
                using var scope = NewDisposeScope();
                var cpu = ToFloat32(entry, CheckpointReader.ReadTensor(manifest, entry));
                result.Add(name, cpu.to(dtype, device).DetachFromDisposeScope());
            }
            return result;
        }
        catch
        {
            foreach (var tensor in result.Values)
            {
                tensor.Dispose();
            }
            throw;
        }
    }

    /// <summary>
    /// A float32 CPU tensor of <paramref name="entry"/>'s shape from its raw little-endian bytes
    /// (F32, F16 or BF16; the 16-bit formats widen exactly).
    /// </summary>
    public static Tensor ToFloat32(TensorEntry entry, ReadOnlySpan<byte> bytes)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (bytes.Length != entry.ElementCount * entry.DType.ElementSize())
        {
            throw new ArgumentException(
                $"Tensor '{entry.Name}' of shape [{string.Join(", ", entry.Shape)}] {entry.DType} needs {entry.ElementCount * entry.DType.ElementSize()} bytes, got {bytes.Length}.",
                nameof(bytes));
        }
        unsafe
        {
            fixed (byte* source = bytes)
            {
                var pointer = (IntPtr)source;
                int length = bytes.Length;
                return ToFloat32(entry, destination => new ReadOnlySpan<byte>((void*)pointer, length).CopyTo(destination));
            }
        }
    }

    /// <summary>Fills a tensor's raw little-endian bytes in place (all of them).</summary>
    public delegate void RawFill(Span<byte> destination);

    /// <summary>
    /// <see cref="ToFloat32(TensorEntry, ReadOnlySpan{byte})"/> with the bytes written by <paramref name="fill"/> straight
    /// into the tensor's storage: no copy of the bytes in managed memory (a 7B-wide layer's would be 200 MB more at its peak).
    /// </summary>
    public static Tensor ToFloat32(TensorEntry entry, RawFill fill)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ArgumentNullException.ThrowIfNull(fill);
        var type = entry.DType switch
        {
            TensorDType.F32 => ScalarType.Float32,
            TensorDType.F16 => ScalarType.Float16,
            TensorDType.BF16 => ScalarType.BFloat16,
            _ => throw new NotSupportedException(
                $"Tensor '{entry.Name}' is {entry.DType}; a model's weights are read from F32, F16 or BF16."),
        };
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("Checkpoints are little-endian; this machine is not.");
        }
        using var scope = NewDisposeScope();
        var raw = empty(entry.Shape, type, CPU);
        if (entry.ElementCount > 0)
        {
            fill(raw.bytes);
        }
        var result = type == ScalarType.Float32 ? raw : raw.to(ScalarType.Float32);
        return result.MoveToOuterDisposeScope();
    }
}
