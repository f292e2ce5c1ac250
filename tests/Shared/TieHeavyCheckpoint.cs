using Shears.Pruning.Checkpoints;

namespace Shears.Testing;

/// <summary>
/// A small sharded LLaMA-layout checkpoint whose weights come from a handful of magnitudes, so
/// almost every threshold falls among ties; with zeros, -0.0 and ±Inf mixed in.
/// </summary>
public static class TieHeavyCheckpoint
{
    public const int Hidden = 32, Layers = 3, Heads = 4, KvHeads = 2, Intermediate = 48, Vocab = 40;

    public static void Write(string dir, TensorDType dtype = TensorDType.BF16, int seed = 7, long maxShardBytes = 20_000, float[]? levels = null)
    {
        _levels = levels ?? DefaultLevels;
        var random = new Random(seed);
        int headDim = Hidden / Heads;
        var tensors = new List<(string Name, TensorDType DType, long[] Shape, byte[] Data)>
        {
            ("model.embed_tokens.weight", dtype, [Vocab, Hidden], Values(random, dtype, Vocab * Hidden)),
            ("model.norm.weight", dtype, [Hidden], Values(random, dtype, Hidden)),
            ("lm_head.weight", dtype, [Vocab, Hidden], Values(random, dtype, Vocab * Hidden)),
        };
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            tensors.Add((p + "self_attn.q_proj.weight", dtype, [Hidden, Hidden], Values(random, dtype, Hidden * Hidden)));
            tensors.Add((p + "self_attn.k_proj.weight", dtype, [KvHeads * headDim, Hidden], Values(random, dtype, KvHeads * headDim * Hidden)));
            tensors.Add((p + "self_attn.v_proj.weight", dtype, [KvHeads * headDim, Hidden], Values(random, dtype, KvHeads * headDim * Hidden)));
            tensors.Add((p + "self_attn.o_proj.weight", dtype, [Hidden, Hidden], Values(random, dtype, Hidden * Hidden)));
            tensors.Add((p + "mlp.gate_proj.weight", dtype, [Intermediate, Hidden], Values(random, dtype, Intermediate * Hidden)));
            tensors.Add((p + "mlp.up_proj.weight", dtype, [Intermediate, Hidden], Values(random, dtype, Intermediate * Hidden)));
            tensors.Add((p + "mlp.down_proj.weight", dtype, [Hidden, Intermediate], Values(random, dtype, Hidden * Intermediate)));
            tensors.Add((p + "input_layernorm.weight", dtype, [Hidden], Values(random, dtype, Hidden)));
            tensors.Add((p + "post_attention_layernorm.weight", dtype, [Hidden], Values(random, dtype, Hidden)));
        }
        tensors.Add(("model.rotary.inv_freq_steps", TensorDType.I64, [4], new byte[32]));
        ShardedCheckpointWriter.Write(dir, tensors, maxShardBytes, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, "config.json"),
            $$"""{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":{{Hidden}},"num_attention_heads":{{Heads}},"num_key_value_heads":{{KvHeads}},"num_hidden_layers":{{Layers}},"intermediate_size":{{Intermediate}},"vocab_size":{{Vocab}}}""");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), """{"version":"1.0","model":{"type":"WordLevel"}}""");
    }

    private static readonly float[] DefaultLevels = [0f, -0f, 0.001f, -0.001f, 0.0625f, -0.0625f, 0.25f, 0.5f, -0.5f, 1f, float.PositiveInfinity, float.NegativeInfinity];

    /// <summary>Subnormals (in fp32 and bf16 alike), the smallest normal, zeros of both signs and infinities.</summary>
    public static readonly float[] ExtremeLevels = [1e-45f, -1e-45f, 1e-40f, 1.1754944e-38f, 0f, -0f, 3.4e38f, float.PositiveInfinity, float.NegativeInfinity, float.PositiveInfinity, float.NegativeInfinity];

    /// <summary>Every weight the same magnitude: the selection is decided by position alone.</summary>
    public static readonly float[] AllEqual = [0.5f, -0.5f];

    [ThreadStatic] private static float[]? _levels;
    private static float[] Levels => _levels ?? DefaultLevels;

    private static byte[] Values(Random random, TensorDType dtype, int count)
    {
        var bytes = new byte[count * dtype.ElementSize()];
        for (int i = 0; i < count; i++)
        {
            // Mostly a few tied levels, some of them rare, plus a sprinkle of distinct values.
            float v = Levels.Length <= 2 ? Levels[random.Next(Levels.Length)]
                : random.NextDouble() < 0.85 ? Levels[random.Next(Levels.Length - (random.NextDouble() < 0.98 ? 2 : 0))] : (float)(random.NextDouble() - 0.5);
            switch (dtype)
            {
                case TensorDType.BF16: BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), FloatBits.SingleToBFloat16(v)); break;
                case TensorDType.F16: BitConverter.TryWriteBytes(bytes.AsSpan(i * 2), FloatBits.SingleToHalf(v)); break;
                default: BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), v); break;
            }
        }
        return bytes;
    }
}
