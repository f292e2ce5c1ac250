using Shears.Pruning.Selection;
using System.Text.Json;
using System.Text.RegularExpressions;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Grains.Runs;

/// <summary>How a run's tensors are split over shard grains, decided from the manifest alone.</summary>
[GenerateSerializer]
public sealed record RunPlan
{
    /// <summary>Prunable tensors in ordinal name order (global position order).</summary>
    [Id(0)] public required IReadOnlyList<string> Prunable { get; init; }
    [Id(1)] public required IReadOnlyList<ShardPlan> Shards { get; init; }
    /// <summary>Elements per selection group (one group for global scope; one per tensor otherwise).</summary>
    [Id(2)] public required long[] GroupElements { get; init; }
    [Id(3)] public long PrunableWeights { get; init; }
    [Id(4)] public HeadLayout? Heads { get; init; }
    /// <summary>Per shard, the model stage it runs (pipeline runs: evaluation or fine-tuning); null otherwise.</summary>
    [Id(5)] public IReadOnlyList<StagePlan>? Stages { get; init; }
    /// <summary>Width of the hidden states that pass between stages (pipeline runs), read once from the model's config.</summary>
    [Id(6)] public int Hidden { get; init; }
    /// <summary>The tensors the run's last phase quantizes (--quantize), in global position order; empty otherwise.</summary>
    [Id(7)] public IReadOnlyList<string> Quantized { get; init; } = [];
}

[GenerateSerializer]
public sealed record ShardPlan
{
    [Id(0)] public required int Index { get; init; }
    [Id(1)] public required IReadOnlyList<TensorPiece> Pieces { get; init; }
    [Id(2)] public required IReadOnlyList<string> CopyTensors { get; init; }
}

public static partial class RunPlanner
{
    /// <summary>Linear weights inside the transformer blocks; embeddings, head, norms and biases stay dense unless included.</summary>
    public static bool IsDefaultPrunable(TensorEntry t) =>
        t.Shape.Length == 2 && t.DType.IsPrunable() && BlockLinear().IsMatch(t.Name)
        && !t.Name.Contains("norm", StringComparison.OrdinalIgnoreCase)
        && !t.Name.Contains("embed", StringComparison.OrdinalIgnoreCase);

    [GeneratedRegex(@"(^|\.)(layers|layer|h|blocks|block)\.\d+\..*\.weight$")]
    private static partial Regex BlockLinear();

    [GeneratedRegex(@"^(.*?(^|\.)(layers|layer|h|blocks|block)\.\d+)\.")]
    private static partial Regex LayerPrefix();

    public static IReadOnlyList<TensorEntry> SelectPrunable(CheckpointManifest manifest, RunSpec spec)
    {
        foreach (string glob in spec.Include.Concat(spec.Exclude))
            if (!manifest.Tensors.Any(t => Glob.IsMatch(glob, t.Name)))
                throw new RunRejectedException($"--include/--exclude pattern '{glob}' matches no tensor of {manifest.Root}");
        var selected = new List<TensorEntry>();
        foreach (var t in manifest.Tensors)
        {
            bool included = spec.Include.Any(g => Glob.IsMatch(g, t.Name));
            bool byDefault = manifest.DefaultPrunable is { } marked ? marked.Contains(t.Name) : IsDefaultPrunable(t);
            bool take = (byDefault || included) && !spec.Exclude.Any(g => Glob.IsMatch(g, t.Name));
            if (!take) continue;
            if (!t.DType.IsPrunable())
                throw new RunRejectedException($"--include: tensor '{t.Name}' has dtype {t.DType}; only F32, F16 and BF16 tensors can be pruned");
            if (t.Shape.Length == 0 || t.ElementCount == 0)
                throw new RunRejectedException($"--include: tensor '{t.Name}' has no elements to prune");
            if (spec.Pattern is RunOptions.Patterns.Rows or RunOptions.Patterns.Columns && t.Shape.Length != 2)
                throw new RunRejectedException($"--pattern {spec.Pattern}: tensor '{t.Name}' is not 2-D (shape [{string.Join(", ", t.Shape)}])");
            selected.Add(t);
        }
        if (spec.Pattern == RunOptions.Patterns.Heads)
        {
            if (manifest.Format == CheckpointFormat.Onnx)
            {
                // A BERT-family encoder: the query, key, value and attention-output weights, by the roles their biases give them.
                if (!manifest.LayerRoles.Values.Any(r => r.Role == "query"))
                    throw new RunRejectedException($"--pattern heads needs a BERT-family encoder whose attention weights feed biases named encoder.layer.N.attention.*; {manifest.Root} has none");
                selected = selected.Where(t => manifest.LayerRoles.TryGetValue(t.Name, out var r) && AttentionRoles.Contains(r.Role)).ToList();
            }
            else if (manifest.Format != CheckpointFormat.Safetensors)
                throw new RunRejectedException($"--pattern heads needs LLaMA-style attention tensor names (q_proj/k_proj/v_proj/o_proj); {manifest.Root} is {manifest.Format}");
            else selected = selected.Where(t => AttentionSuffix(t.Name) is not null).ToList();
        }
        if (spec.Pattern == RunOptions.Patterns.Neurons)
        {
            if (manifest.Format == CheckpointFormat.Onnx && !manifest.LayerRoles.Values.Any(r => r.Role == "intermediate"))
                throw new RunRejectedException($"--pattern neurons needs a BERT-family encoder whose FFN weights feed biases named encoder.layer.N.intermediate/output; {manifest.Root} has none");
            selected = selected.Where(t => Shears.Engine.Shards.ShardSelection.NeuronLayerOf(manifest, t.Name) is not null).ToList();
        }
        if (spec.Pattern == RunOptions.Patterns.Layers && manifest.Format == CheckpointFormat.Onnx)
        {
            // A post-norm encoder layer is not passed over by zeroing its matrices (its biases and LayerNorms remain): the
            // stages bypass a layer whose six matrices are all masked, and only a graph without the layer does the same.
            if (!spec.Remove)
                throw new RunRejectedException($"--pattern layers on an ONNX encoder ({manifest.Root}) needs --remove: a post-norm layer with its matrices zeroed still computes (its biases and LayerNorms remain), so the output leaves the layer out of the graph");
            var roles = selected.Select(t => manifest.LayerRoles.TryGetValue(t.Name, out var r) ? r : (Layer: -1, Role: "")).Where(r => r.Layer >= 0).ToHashSet();
            foreach (int layer in manifest.LayerRoles.Values.Select(r => r.Layer).Distinct().Order())
                foreach (string role in EncoderMatrixRoles)
                    if (!roles.Contains((layer, role)))
                        throw new RunRejectedException($"--pattern layers masks every matrix of a layer: the {role} weight of encoder layer {layer} must be pruned (check --include/--exclude)");
        }
        else if (spec.Pattern == RunOptions.Patterns.Layers)
        {
            if (manifest.Format != CheckpointFormat.Safetensors)
                throw new RunRejectedException($"--pattern layers works on LLaMA-family safetensors checkpoints and BERT-family ONNX encoders; {manifest.Root} is {manifest.Format}");
            // A layer is bypassed only when all of its matrices are masked: every one of them must be pruned.
            var names = selected.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var layer in manifest.Tensors.Select(t => LayerPrefix().Match(t.Name)).Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct())
                foreach (string matrix in LayerMatrices)
                    if (!names.Contains($"{layer}.{matrix}"))
                        throw new RunRejectedException($"--pattern layers masks every matrix of a layer: tensor '{layer}.{matrix}' must be pruned (check --include/--exclude)");
        }
        if (selected.Count == 0)
            throw new RunRejectedException($"no prunable tensor in {manifest.Root}: nothing matches the default rule (2-D linear weights inside the blocks) or --include");
        return selected;
    }

    private static readonly string[] LayerMatrices =
    [
        "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    ];

    private static readonly string[] AttentionRoles = ["query", "key", "value", "attention.output"];

    private static readonly string[] EncoderMatrixRoles = ["query", "key", "value", "attention.output", "intermediate", "output"];

    private static string? AttentionSuffix(string name) =>
        new[] { "q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight" }.FirstOrDefault(s => name.EndsWith(s, StringComparison.Ordinal));

    public static string LayerOf(string tensor)
    {
        var m = LayerPrefix().Match(tensor);
        return m.Success ? m.Groups[1].Value : tensor;
    }

    /// <param name="splitLayers">A pipeline's decoder layers as two stages each (attention, MLP): see <see cref="CanSplitLayers"/>.</param>
    public static RunPlan Plan(CheckpointManifest manifest, RunSpec spec, bool splitLayers = false)
    {
        RefuseQuantizedInput(manifest, spec);
        RefuseRemoval(manifest, spec);
        var prunable = SelectPrunable(manifest, spec);
        RefuseNmWidths(manifest, spec, prunable);
        var quantized = QuantizedTensors(manifest, spec, prunable);
        var plan = spec.NeedsPipeline ? PipelinePlan(manifest, spec, prunable, splitLayers) : ShardedPlan(manifest, spec, prunable);
        return plan with { Quantized = quantized };
    }

    /// <summary>
    /// N:M groups M consecutive input features of each output: a matrix whose input width M does not divide is refused
    /// before the run (the shapes are the headers'), not when its shard reaches it.
    /// </summary>
    private static void RefuseNmWidths(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable)
    {
        int m = spec.NmPattern.M;
        if (m <= 0) return;
        foreach (var t in prunable)
        {
            long input = t.Shape.Length != 2 ? 0 : manifest.OutputColumns.Contains(t.Name) ? t.Shape[0] : t.Shape[1];
            if (input <= 0 || input % m != 0)
                throw new RunRejectedException(
                    $"--pattern {spec.Pattern}: tensor '{t.Name}' of shape [{string.Join(", ", t.Shape)}] has {(t.Shape.Length != 2 ? "no input dimension of a matrix" : $"{input} input features, not a multiple of {m}")}; " +
                    "leave it out with --exclude, or prune it with another pattern in a run of its own");
        }
    }

    /// <summary>
    /// Whether a pipeline's decoder layers may run as two stages each: LLaMA-family decoders in runs that evaluate or
    /// fine-tune. A calibrated run (Wanda, SparseGPT, GPTQ, OWL, layer ranking) keeps each layer on one shard, since it
    /// collects the whole layer's inputs from one pass of the dense layer; an encoder's layers are not split.
    /// </summary>
    public static bool CanSplitLayers(CheckpointManifest manifest, RunSpec spec) =>
        spec.NeedsPipeline && !spec.UsesCalibration && manifest.Format == CheckpointFormat.Safetensors;

    /// <summary>
    /// --remove is refused before the run where the smaller model could not be written: an ONNX model (not yet), a
    /// LLaMA-family config that cannot hold per-layer sizes (global scope), or a share that removes a whole layer's units.
    /// </summary>
    private static void RefuseRemoval(CheckpointManifest manifest, RunSpec spec)
    {
        if (!spec.Remove) return;
        if (manifest.Format == CheckpointFormat.Onnx)
        {
            // An ONNX graph may give each layer its own width and head count: any scope (a layer left without any is refused once known).
            if (spec.Pattern is not (RunOptions.Patterns.Neurons or RunOptions.Patterns.Heads or RunOptions.Patterns.Layers))
                throw new RunRejectedException($"--remove --pattern {spec.Pattern}: MLP neurons, attention heads and whole layers are removed from ONNX models ({manifest.Root}); use --pattern neurons, heads or layers");
            if (spec.Pattern == RunOptions.Patterns.Layers)
            {
                int layers = manifest.LayerRoles.Values.Select(r => r.Layer).Distinct().Count();
                if (Counts.Target(spec.Sparsity, layers) >= layers)
                    throw new RunRejectedException($"--remove --sparsity {spec.Sparsity} removes all {layers} encoder layers of {manifest.Root}");
                // Whichever layers the rounds choose, the graph must be able to leave each one out.
                try
                {
                    var graph = Shears.Pruning.Onnx.OnnxModel.Read(manifest.PathOf(manifest.Files[0].FileName));
                    var names = Shears.Pruning.Encoders.BertWeightNames.FromOnnx(graph);
                    for (int l = 0; l < names.Layers.Count; l++) Shears.Pruning.Structured.EncoderLayerRemoval.Plan(graph, names, [l]);
                }
                catch (CheckpointFormatException e)
                {
                    throw new RunRejectedException($"--remove --pattern layers: {e.Message}");
                }
            }
            return;
        }
        Shears.Pruning.Models.LlamaConfig config;
        try { config = Shears.Pruning.Models.LlamaConfig.Load(manifest.Root); }
        catch (Exception e) when (e is Shears.Pruning.Models.LlamaConfigException or IOException)
        {
            throw new RunRejectedException($"--remove writes the smaller model's config.json and needs the input's: {e.Message}");
        }
        if (spec.Pattern == RunOptions.Patterns.Layers)
        {
            if (Counts.Target(spec.Sparsity, config.NumHiddenLayers) >= config.NumHiddenLayers)
                throw new RunRejectedException($"--remove --sparsity {spec.Sparsity} removes all {config.NumHiddenLayers} layers: num_hidden_layers would be 0");
            return;
        }
        bool neurons = spec.Pattern == RunOptions.Patterns.Neurons;
        string field = neurons ? "intermediate_size" : "num_attention_heads";
        if (spec.Scope != RunOptions.Scopes.Layer)
            throw new RunRejectedException(
                $"--remove --scope {spec.Scope}: config.json's {field} is one number for every layer, so each layer must lose as many {(neurons ? "neurons" : "heads")}: use --scope layer");
        // With grouped-query attention every key/value group loses its own share (EngineWire.Recipe), so all stay equal.
        int units = neurons ? config.IntermediateSize : config.NumKeyValueHeads < config.NumAttentionHeads ? config.KeyValueGroups : config.NumAttentionHeads;
        if (Counts.Target(spec.Sparsity, units) >= units)
            throw new RunRejectedException(
                $"--remove --sparsity {spec.Sparsity} removes all {units} {(neurons ? "neurons of each layer" : config.NumKeyValueHeads < config.NumAttentionHeads ? "query heads of each key/value group" : "heads of each layer")}: {field} would be 0");
    }

    /// <summary>
    /// The tensors no shard prunes are copied byte for byte by the shards, the largest first to the
    /// shard with the fewest bytes so far. An ONNX model is copied whole first: nothing to spread.
    /// </summary>
    private static List<string>[] SpreadCopies(CheckpointManifest manifest, IReadOnlySet<string> held, int shards)
    {
        if (manifest.Format != CheckpointFormat.Safetensors) return Enumerable.Range(0, shards).Select(_ => new List<string>()).ToArray();
        return SpreadByBytes(manifest.Tensors.Where(t => !held.Contains(t.Name)), shards);
    }

    /// <summary>Tensors shared among <paramref name="shards"/> shards, the largest first to the shard with the fewest bytes so far.</summary>
    internal static List<string>[] SpreadByBytes(IEnumerable<TensorEntry> tensors, int shards)
    {
        var shares = Enumerable.Range(0, shards).Select(_ => new List<string>()).ToArray();
        var bytes = new long[shards];
        foreach (var t in tensors.OrderByDescending(t => t.ByteLength))
        {
            int target = Array.IndexOf(bytes, bytes.Min());
            shares[target].Add(t.Name);
            bytes[target] += t.ByteLength;
        }
        return shares;
    }

    /// <summary>Whether the tensor's output neurons are its columns (ONNX MatMul weights are stored [in, out]).</summary>
    public static bool OutputIsColumn(CheckpointManifest manifest, string tensor) => manifest.OutputColumns.Contains(tensor);

    /// <summary>
    /// Attention geometry from config.json (num_attention_heads, num_key_value_heads, hidden_size, head_dim), or for an
    /// ONNX encoder from its graph (heads of its first layer; each layer's own count follows from its query width).
    /// </summary>
    public static HeadLayout ReadHeadLayout(CheckpointManifest manifest)
    {
        if (manifest.Format == CheckpointFormat.Onnx)
        {
            try
            {
                var config = Shears.Pruning.Encoders.BertConfig.FromOnnx(Shears.Pruning.Onnx.OnnxModel.Read(manifest.PathOf(manifest.Files[0].FileName)));
                return new HeadLayout { Heads = config.NumAttentionHeads, KvHeads = config.NumAttentionHeads, HeadDim = config.HeadDim, Hidden = config.HiddenSize };
            }
            catch (Exception e) when (e is InvalidDataException or ArgumentException or InvalidOperationException or CheckpointFormatException)
            {
                throw new RunRejectedException($"--pattern heads needs the encoder's attention layout: {e.Message}");
            }
        }
        string path = Path.Combine(manifest.Root, "config.json");
        if (!File.Exists(path))
            throw new RunRejectedException($"--pattern heads needs {path} (num_attention_heads, hidden_size)");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            int heads = root.GetProperty("num_attention_heads").GetInt32();
            int hidden = root.GetProperty("hidden_size").GetInt32();
            int kv = root.TryGetProperty("num_key_value_heads", out var k) && k.ValueKind == JsonValueKind.Number ? k.GetInt32() : heads;
            int headDim = root.TryGetProperty("head_dim", out var d) && d.ValueKind == JsonValueKind.Number ? d.GetInt32() : hidden / heads;
            if (heads <= 0 || kv <= 0 || heads % kv != 0 || headDim <= 0)
                throw new RunRejectedException($"{path}: num_attention_heads {heads} must be a positive multiple of num_key_value_heads {kv}");
            return new HeadLayout { Heads = heads, KvHeads = kv, HeadDim = headDim, Hidden = hidden };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new RunRejectedException($"{path}: cannot read the attention layout: {e.Message}");
        }
    }
}
