using System.Buffers.Binary;
using System.Text.Json;

namespace Shears.Pruning.Checkpoints;

/// <summary>Sizes and seed of the demo checkpoint; the defaults give about 7 MB of bf16 in two shards.</summary>
public sealed record DemoCheckpointOptions(
    int HiddenSize = 256,
    int Layers = 4,
    int Heads = 8,
    int KvHeads = 4,
    int IntermediateSize = 688,
    int VocabSize = 1024,
    TensorDType DType = TensorDType.BF16,
    long MaxShardBytes = 4_000_000,
    int Seed = 1234,
    string ModelType = "llama",
    int? HeadDim = null,
    bool TieWordEmbeddings = false,
    int? SlidingWindow = null);

/// <summary>
/// Writes a small, seeded LLaMA-layout Hugging Face checkpoint (safetensors, config.json,
/// generation_config.json) to try Shears on without downloading a model.
/// </summary>
public static class DemoCheckpoint
{
    private const double StandardDeviation = 0.02;

    // About one weight in a thousand of each linear layer is an exact zero, as pruned or quantized models have.
    private const int ZeroEvery = 1000;

    public static void Write(string dir, DemoCheckpointOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(dir);
        var o = options ?? new DemoCheckpointOptions();
        Validate(o);

        var hidden = o.HiddenSize;
        var headDim = o.HeadDim ?? hidden / o.Heads;
        var qDim = o.Heads * headDim;
        var kvDim = o.KvHeads * headDim;
        var inter = o.IntermediateSize;
        var random = new Normal(o.Seed);

        var tensors = new List<(string Name, TensorDType DType, long[] Shape, byte[] Data)>();
        void Weight(string name, params long[] shape) =>
            tensors.Add((name, o.DType, shape, Encode(Sample(random, shape, 0f, zeros: shape.Length == 2), o.DType)));
        void Norm(string name, long width = 0) =>
            tensors.Add((name, o.DType, [width == 0 ? hidden : width], Encode(Sample(random, [width == 0 ? hidden : width], 1f, zeros: false), o.DType)));
        void Bias(string name, long width) =>
            tensors.Add((name, o.DType, [width], Encode(Sample(random, [width], 0f, zeros: false), o.DType)));

        Weight("model.embed_tokens.weight", o.VocabSize, hidden);
        for (var i = 0; i < o.Layers; i++)
        {
            var p = $"model.layers.{i}.";
            Weight(p + "self_attn.q_proj.weight", qDim, hidden);
            Weight(p + "self_attn.k_proj.weight", kvDim, hidden);
            Weight(p + "self_attn.v_proj.weight", kvDim, hidden);
            if (o.ModelType == "qwen2")
            {
                // Qwen2 puts biases on the query, key and value projections (not on o_proj).
                Bias(p + "self_attn.q_proj.bias", qDim);
                Bias(p + "self_attn.k_proj.bias", kvDim);
                Bias(p + "self_attn.v_proj.bias", kvDim);
            }
            Weight(p + "self_attn.o_proj.weight", hidden, qDim);
            if (o.ModelType == "qwen3")
            {
                Norm(p + "self_attn.q_norm.weight", headDim);
                Norm(p + "self_attn.k_norm.weight", headDim);
            }
            Weight(p + "mlp.gate_proj.weight", inter, hidden);
            Weight(p + "mlp.up_proj.weight", inter, hidden);
            Weight(p + "mlp.down_proj.weight", hidden, inter);
            Norm(p + "input_layernorm.weight");
            Norm(p + "post_attention_layernorm.weight");
        }
        Norm("model.norm.weight");
        if (!o.TieWordEmbeddings)
        {
            Weight("lm_head.weight", o.VocabSize, hidden);
        }

        Directory.CreateDirectory(dir);
        ShardedCheckpointWriter.Write(dir, tensors, o.MaxShardBytes, new Dictionary<string, string> { ["format"] = "pt" });
        WriteConfig(Path.Combine(dir, "config.json"), o, headDim);
        WriteGenerationConfig(Path.Combine(dir, "generation_config.json"));
    }

    private static void Validate(DemoCheckpointOptions o)
    {
        if (o.HiddenSize <= 0 || o.Layers < 0 || o.Heads <= 0 || o.KvHeads <= 0 || o.IntermediateSize <= 0 || o.VocabSize <= 0)
        {
            throw new ArgumentException($"Demo checkpoint sizes must be positive: {o}.", nameof(o));
        }
        if (o.ModelType is not ("llama" or "mistral" or "qwen2" or "qwen3"))
        {
            throw new ArgumentException($"The demo checkpoint's model_type is llama, mistral, qwen2 or qwen3, not '{o.ModelType}'.", nameof(o));
        }
        if (o.SlidingWindow is { } window && (window <= 0 || o.ModelType == "llama"))
        {
            throw new ArgumentException($"SlidingWindow {window} needs a positive window and a mistral, qwen2 or qwen3 model_type.", nameof(o));
        }
        if (o.HeadDim is { } headDim && (headDim <= 0 || headDim % 2 != 0))
        {
            throw new ArgumentException($"HeadDim {headDim} must be positive and even.", nameof(o));
        }
        if (o.HeadDim is null && o.HiddenSize % o.Heads != 0)
        {
            throw new ArgumentException($"HiddenSize {o.HiddenSize} must be a multiple of Heads {o.Heads}.", nameof(o));
        }
        if (o.Heads % o.KvHeads != 0)
        {
            throw new ArgumentException($"Heads {o.Heads} must be a multiple of KvHeads {o.KvHeads}.", nameof(o));
        }
        if (o.DType is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16))
        {
            throw new ArgumentException($"The demo checkpoint is F32, F16 or BF16, not {o.DType}.", nameof(o));
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(o.MaxShardBytes);
    }

    private static float[] Sample(Normal random, long[] shape, float mean, bool zeros)
    {
        var values = new float[TensorEntry.CountElements(shape)];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = mean + (float)(random.Next() * StandardDeviation);
        }
        if (zeros)
        {
            for (var z = 0; z < Math.Max(1, values.Length / ZeroEvery); z++)
            {
                values[random.NextIndex(values.Length)] = 0f;
            }
        }
        return values;
    }

    private static byte[] Encode(float[] values, TensorDType dtype)
    {
        var bytes = new byte[values.LongLength * dtype.ElementSize()];
        var span = bytes.AsSpan();
        for (var i = 0; i < values.Length; i++)
        {
            switch (dtype)
            {
                case TensorDType.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(span[(i * 4)..], values[i]);
                    break;
                case TensorDType.F16:
                    BinaryPrimitives.WriteUInt16LittleEndian(span[(i * 2)..], FloatBits.SingleToHalf(values[i]));
                    break;
                default:
                    BinaryPrimitives.WriteUInt16LittleEndian(span[(i * 2)..], FloatBits.SingleToBFloat16(values[i]));
                    break;
            }
        }
        return bytes;
    }

    private static string TorchDType(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => "float32",
        TensorDType.F16 => "float16",
        _ => "bfloat16",
    };

    private static void WriteConfig(string path, DemoCheckpointOptions o, int headDim) =>
        WriteJson(path, w =>
        {
            w.WriteStartArray("architectures");
            w.WriteStringValue(o.ModelType switch { "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", _ => "LlamaForCausalLM" });
            w.WriteEndArray();
            w.WriteBoolean("attention_bias", false);
            w.WriteNumber("attention_dropout", 0);
            w.WriteNumber("bos_token_id", 1);
            w.WriteNumber("eos_token_id", 2);
            w.WriteNumber("head_dim", headDim);
            w.WriteString("hidden_act", "silu");
            w.WriteNumber("hidden_size", o.HiddenSize);
            w.WritePropertyName("initializer_range");
            w.WriteRawValue("0.02");
            w.WriteNumber("intermediate_size", o.IntermediateSize);
            w.WriteNumber("max_position_embeddings", 512);
            w.WriteBoolean("mlp_bias", false);
            if (o.ModelType is "qwen2" or "qwen3")
            {
                // Qwen: the layers from max_window_layers on use the sliding window when use_sliding_window is set.
                w.WriteNumber("max_window_layers", o.Layers / 2);
            }
            w.WriteString("model_type", o.ModelType);
            w.WriteNumber("num_attention_heads", o.Heads);
            w.WriteNumber("num_hidden_layers", o.Layers);
            w.WriteNumber("num_key_value_heads", o.KvHeads);
            w.WriteNumber("pretraining_tp", 1);
            w.WritePropertyName("rms_norm_eps");
            w.WriteRawValue("1e-05");
            w.WriteNull("rope_scaling");
            w.WritePropertyName("rope_theta");
            w.WriteRawValue("10000.0");
            if (o.ModelType != "llama")
            {
                if (o.SlidingWindow is { } window) w.WriteNumber("sliding_window", window);
                else w.WriteNull("sliding_window");
            }
            w.WriteBoolean("tie_word_embeddings", o.TieWordEmbeddings);
            w.WriteString("torch_dtype", TorchDType(o.DType));
            w.WriteBoolean("use_cache", true);
            if (o.ModelType is "qwen2" or "qwen3")
            {
                w.WriteBoolean("use_sliding_window", o.SlidingWindow is not null);
            }
            w.WriteNumber("vocab_size", o.VocabSize);
        });

    private static void WriteGenerationConfig(string path) =>
        WriteJson(path, w =>
        {
            w.WriteNumber("bos_token_id", 1);
            w.WriteBoolean("do_sample", false);
            w.WriteNumber("eos_token_id", 2);
            w.WriteNumber("max_length", 512);
        });

    private static void WriteJson(string path, Action<Utf8JsonWriter> body)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        writer.WriteStartObject();
        body(writer);
        writer.WriteEndObject();
    }

    /// <summary>Standard normal samples by Box–Muller from a seeded System.Random: reproducible everywhere.</summary>
    private sealed class Normal(int seed)
    {
        private readonly Random _random = new(seed);
        private double? _spare;

        public double Next()
        {
            if (_spare is { } spare)
            {
                _spare = null;
                return spare;
            }
            var u1 = 1.0 - _random.NextDouble(); // (0, 1]: the logarithm stays finite
            var u2 = _random.NextDouble();
            var radius = Math.Sqrt(-2.0 * Math.Log(u1));
            var angle = 2.0 * Math.PI * u2;
            _spare = radius * Math.Sin(angle);
            return radius * Math.Cos(angle);
        }

        public int NextIndex(int length) => _random.Next(length);
    }
}
