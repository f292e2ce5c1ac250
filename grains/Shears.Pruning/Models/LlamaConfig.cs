using System.Text.Json;

namespace Shears.Pruning.Models;

/// <summary>
/// The architecture of a LLaMA-family decoder, as a Hugging Face config.json gives it. Defaults are
/// those of transformers' LlamaConfig.
/// </summary>
public sealed record LlamaConfig(
    int HiddenSize,
    int IntermediateSize,
    int NumAttentionHeads,
    int NumKeyValueHeads,
    int HeadDim,
    int NumHiddenLayers,
    int VocabSize,
    double RmsNormEps = 1e-6,
    double RopeTheta = 10000.0,
    bool TieWordEmbeddings = false,
    int MaxPositionEmbeddings = 2048,
    LlamaRopeScaling? RopeScaling = null,
    bool AttentionBias = false,
    bool MlpBias = false,
    string ModelType = LlamaConfig.DefaultModelType,
    int? SlidingWindow = null,
    int SlidingWindowFromLayer = 0)
{
    public const string FileName = "config.json";

    /// <summary>What a config.json without model_type is taken for.</summary>
    public const string DefaultModelType = "llama";

    /// <summary>
    /// The model_type values whose forward pass Shears computes as transformers does: LLaMA; Mistral (sliding-window
    /// attention); Qwen2 (q/k/v biases, optional sliding windows in the upper layers); Qwen3 (RMSNorm of each query and
    /// key head, q_norm/k_norm). Other LLaMA-like families change the computation (Granite's multipliers, Gemma's
    /// norms and activation, layers without rotary embeddings) and are refused rather than computed wrongly.
    /// </summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["llama", "mistral", "qwen2", "qwen3"];

    /// <summary>Whether each query and key head is RMS-normalized before the rotary embedding (Qwen3).</summary>
    public bool QueryKeyNorm => ModelType == "qwen3";

    /// <summary>The attention window of decoder layer <paramref name="layer"/>: null for full causal attention.</summary>
    public int? WindowOf(int layer) => layer >= SlidingWindowFromLayer ? SlidingWindow : null;

    /// <summary>Query heads that share one key/value head.</summary>
    public int KeyValueGroups => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>Width of the query projection's output (heads × head_dim); equals hidden_size unless head_dim is set apart.</summary>
    public int QueryWidth => NumAttentionHeads * HeadDim;

    /// <summary>Width of the key and value projections' outputs.</summary>
    public int KeyValueWidth => NumKeyValueHeads * HeadDim;

    /// <summary>Reads config.json from a checkpoint directory, or the file itself when <paramref name="path"/> is a file.</summary>
    public static LlamaConfig Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        file = Path.GetFullPath(file);
        string json;
        try
        {
            json = File.ReadAllText(file);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new LlamaConfigException(file, null, "file does not exist; a Hugging Face checkpoint keeps its architecture in config.json", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlamaConfigException(file, null, $"file cannot be read: {e.Message}", e);
        }
        return Parse(json, file);
    }

    /// <summary>Parses the text of a config.json; <paramref name="source"/> names it in errors.</summary>
    public static LlamaConfig Parse(string json, string source = FileName)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new LlamaConfigException(source, null, $"is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new LlamaConfigException(source, null, $"must be a JSON object, found {root.ValueKind}");
            }
            var reader = new FieldReader(root, source);

            var modelType = reader.OptionalString("model_type") ?? DefaultModelType;
            if (!ModelTypes.Contains(modelType))
            {
                throw new LlamaConfigException(source, "model_type",
                    $"is '{modelType}'; Shears computes the forward pass of {string.Join(", ", ModelTypes.Select(t => $"\"{t}\""))} models " +
                    "(evaluation, calibration, fine-tuning and --remove need it; magnitude, random and N:M pruning without them work on any safetensors checkpoint)");
            }

            var activation = reader.OptionalString("hidden_act");
            if (activation is not null and not ("silu" or "swish"))
            {
                throw new LlamaConfigException(source, "hidden_act", $"is '{activation}'; a LLaMA-family MLP is SiLU-gated (\"silu\")");
            }

            var hidden = reader.RequiredPositiveInt("hidden_size");
            var heads = reader.RequiredPositiveInt("num_attention_heads");
            var kvHeads = reader.OptionalPositiveInt("num_key_value_heads") ?? heads;
            var headDim = reader.OptionalPositiveInt("head_dim") ?? DefaultHeadDim(source, hidden, heads);

            // transformers v5 moves rope_theta and the scaling into "rope_parameters".
            var ropeParameters = reader.OptionalObject("rope_parameters");
            var ropeTheta = reader.OptionalPositiveDouble("rope_theta")
                ?? (ropeParameters is { } rp ? new FieldReader(rp, source, "rope_parameters.").OptionalPositiveDouble("rope_theta") : null)
                ?? 10000.0;
            var scaling = reader.OptionalObject("rope_scaling") is { } rs
                ? LlamaRopeScaling.Parse(new FieldReader(rs, source, "rope_scaling."))
                : ropeParameters is { } rp2 ? LlamaRopeScaling.Parse(new FieldReader(rp2, source, "rope_parameters.")) : null;

            var config = new LlamaConfig(
                HiddenSize: hidden,
                IntermediateSize: reader.RequiredPositiveInt("intermediate_size"),
                NumAttentionHeads: heads,
                NumKeyValueHeads: kvHeads,
                HeadDim: headDim,
                NumHiddenLayers: reader.RequiredNonNegativeInt("num_hidden_layers"),
                VocabSize: reader.RequiredPositiveInt("vocab_size"),
                RmsNormEps: reader.OptionalPositiveDouble("rms_norm_eps") ?? 1e-6,
                RopeTheta: ropeTheta,
                TieWordEmbeddings: reader.OptionalBool("tie_word_embeddings") ?? false,
                MaxPositionEmbeddings: reader.OptionalPositiveInt("max_position_embeddings") ?? 2048,
                RopeScaling: scaling,
                AttentionBias: reader.OptionalBool("attention_bias") ?? false,
                MlpBias: reader.OptionalBool("mlp_bias") ?? false,
                ModelType: modelType);
            var layers = config.NumHiddenLayers;
            var (window, fromLayer) = SlidingWindows(reader, modelType, layers);
            config = config with { SlidingWindow = window, SlidingWindowFromLayer = fromLayer };
            config.Validate(source);
            return config;
        }
    }

    /// <summary>Checks the sizes fit together; <paramref name="source"/> names the configuration in errors.</summary>
    public void Validate(string source = FileName)
    {
        void Positive(string field, int value)
        {
            if (value <= 0)
            {
                throw new LlamaConfigException(source, field, $"is {value}; expected a positive integer");
            }
        }
        Positive("hidden_size", HiddenSize);
        Positive("intermediate_size", IntermediateSize);
        Positive("num_attention_heads", NumAttentionHeads);
        Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("head_dim", HeadDim);
        Positive("vocab_size", VocabSize);
        Positive("max_position_embeddings", MaxPositionEmbeddings);
        if (NumHiddenLayers < 0)
        {
            throw new LlamaConfigException(source, "num_hidden_layers", $"is {NumHiddenLayers}; expected zero or more");
        }
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new LlamaConfigException(source, "num_key_value_heads",
                $"is {NumKeyValueHeads}, which does not divide num_attention_heads ({NumAttentionHeads})");
        }
        if (SlidingWindow is { } window && window <= 0)
        {
            throw new LlamaConfigException(source, "sliding_window", $"is {window}; expected a positive integer");
        }
        if (HeadDim % 2 != 0)
        {
            throw new LlamaConfigException(source, "head_dim", $"is {HeadDim}; rotary embeddings need an even head dimension");
        }
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps))
        {
            throw new LlamaConfigException(source, "rms_norm_eps", $"is {RmsNormEps}; expected a positive number");
        }
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta))
        {
            throw new LlamaConfigException(source, "rope_theta", $"is {RopeTheta}; expected a positive number");
        }
    }

    /// <summary>
    /// Which layers attend within a sliding window, as transformers decides it: Mistral applies sliding_window (default
    /// 4096) to every layer; Qwen2 and Qwen3 only with use_sliding_window, to the layers from max_window_layers on; a
    /// layer_types list, where given, says it layer by layer and must be full layers followed by sliding ones.
    /// </summary>
    private static (int? Window, int FromLayer) SlidingWindows(FieldReader reader, string modelType, int layers)
    {
        int? window;
        int fromLayer = 0;
        switch (modelType)
        {
            case "mistral":
                window = reader.Has("sliding_window") ? reader.OptionalPositiveInt("sliding_window") : 4096;
                break;
            case "qwen2" or "qwen3":
                window = reader.OptionalBool("use_sliding_window") == true ? reader.OptionalPositiveInt("sliding_window") ?? 4096 : null;
                fromLayer = reader.OptionalInt("max_window_layers", 0, "zero or a positive integer") ?? 28;
                break;
            default:
                window = null;
                break;
        }
        if (reader.OptionalStrings("layer_types") is { } types)
        {
            if (types.Count != layers)
            {
                throw new LlamaConfigException(reader.Source, "layer_types", $"has {types.Count} entries; num_hidden_layers is {layers}");
            }
            if (types.FirstOrDefault(t => t is not ("full_attention" or "sliding_attention")) is { } other)
            {
                throw new LlamaConfigException(reader.Source, "layer_types", $"holds '{other}'; Shears computes \"full_attention\" and \"sliding_attention\" layers");
            }
            var firstSliding = types.IndexOf("sliding_attention");
            if (firstSliding < 0)
            {
                return (null, 0);
            }
            if (types.Skip(firstSliding).Any(t => t != "sliding_attention"))
            {
                throw new LlamaConfigException(reader.Source, "layer_types",
                    "interleaves full and sliding-window layers; Shears computes full layers followed by sliding-window ones");
            }
            window = reader.OptionalPositiveInt("sliding_window")
                ?? throw new LlamaConfigException(reader.Source, "sliding_window", "is missing; layer_types names sliding_attention layers");
            return (window, firstSliding);
        }
        return window is null || fromLayer >= layers ? (null, 0) : (window, fromLayer);
    }

    private static int DefaultHeadDim(string source, int hidden, int heads)
    {
        if (hidden % heads != 0)
        {
            throw new LlamaConfigException(source, "head_dim",
                $"is absent and hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}); give head_dim");
        }
        return hidden / heads;
    }
}

/// <summary>
/// RoPE frequency scaling from config.json's rope_scaling: "linear" (positions divided by
/// <paramref name="Factor"/>) and "llama3" (Llama 3.1's smooth blend of long wavelengths).
/// </summary>
public sealed record LlamaRopeScaling(
    string RopeType,
    double Factor,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    internal static LlamaRopeScaling? Parse(FieldReader reader)
    {
        var type = reader.OptionalString("rope_type") ?? reader.OptionalString("type") ?? "default";
        switch (type)
        {
            case "default":
                return null;
            case "linear":
                return new LlamaRopeScaling(type, reader.RequiredPositiveDouble("factor"));
            case "llama3":
                var scaling = new LlamaRopeScaling(type,
                    reader.RequiredPositiveDouble("factor"),
                    reader.RequiredPositiveDouble("low_freq_factor"),
                    reader.RequiredPositiveDouble("high_freq_factor"),
                    reader.RequiredPositiveInt("original_max_position_embeddings"));
                if (!(scaling.HighFreqFactor > scaling.LowFreqFactor))
                {
                    throw new LlamaConfigException(reader.Source, reader.Prefix + "high_freq_factor",
                        $"is {scaling.HighFreqFactor}; expected more than low_freq_factor ({scaling.LowFreqFactor})");
                }
                return scaling;
            default:
                throw new LlamaConfigException(reader.Source, reader.Prefix + "rope_type",
                    $"is '{type}'; Shears computes \"default\", \"linear\" and \"llama3\" rotary embeddings");
        }
    }
}

/// <summary>config.json does not describe a LLaMA-family model Shears can run; names the file and the field.</summary>
public sealed class LlamaConfigException : Exception
{
    public LlamaConfigException(string path, string? field, string problem, Exception? inner = null)
        : base(field is null ? $"Model config '{path}': {problem}" : $"Model config '{path}', field '{field}': {problem}", inner)
    {
        FilePath = path;
        Field = field;
    }

    public string FilePath { get; }

    public string? Field { get; }
}
