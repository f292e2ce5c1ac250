using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.TinyLm;

internal sealed record TrainOptions(
    int Hidden = 192,
    int Intermediate = 512,
    int Layers = 4,
    int Heads = 4,
    int KvHeads = 2,
    int Steps = 1800,
    int Batch = 32,
    double LearningRate = 3e-3,
    double MinLearningRate = 3e-4,
    int Warmup = 50,
    double WeightDecay = 0,
    double ClipNorm = 1.0,
    int Seed = 1,
    int LogEvery = 50);

internal sealed record TrainLogEntry(int Step, double LearningRate, double Loss, double Seconds);

internal sealed record TrainSummary(
    TrainOptions Options,
    long Parameters,
    long TrainBytes,
    double Seconds,
    IReadOnlyList<TrainLogEntry> Log,
    double HeldOutPerplexity,
    long HeldOutTokens,
    double CalibrationPerplexity);

/// <summary>
/// Trains a byte-level LLaMA from scratch with Shears' own decoder (LlamaModel), loss (Perplexity.Loss)
/// and optimizer (MaskedAdamW without masks): random 128-byte windows of the training slice, AdamW with
/// linear warm-up and cosine decay, gradient clipping. Saves an F32 Hugging Face checkpoint.
/// </summary>
internal static class Trainer
{
    public static LlamaConfig Config(TrainOptions o) => new(
        HiddenSize: o.Hidden,
        IntermediateSize: o.Intermediate,
        NumAttentionHeads: o.Heads,
        NumKeyValueHeads: o.KvHeads,
        HeadDim: o.Hidden / o.Heads,
        NumHiddenLayers: o.Layers,
        VocabSize: 256,
        RmsNormEps: 1e-5,
        RopeTheta: 10000.0,
        TieWordEmbeddings: false,
        MaxPositionEmbeddings: 512);

    public static TrainSummary Train(TrainOptions o, byte[] train, long[][] heldOut, long[][] calibration, string modelDir)
    {
        var config = Config(o);
        config.Validate("tinylm");
        torch.manual_seed(o.Seed);
        var device = CPU;

        var init = InitialWeights(config, o);
        using var model = LlamaModel.FromTensors(config, init, device);
        foreach (var t in init.Values)
        {
            t.Dispose();
        }
        model.SetRequiresGrad(true);
        var parameters = model.Parameters;
        long count = parameters.Values.Sum(t => t.numel());
        Console.WriteLine($"train: {count:N0} parameters; hidden {o.Hidden}, {o.Layers} layers, {o.Heads} heads / {o.KvHeads} KV heads, " +
                          $"intermediate {o.Intermediate}; {o.Steps} steps of {o.Batch}×{TextData.SeqLen} bytes; {torch.get_num_threads()} threads");

        // Weight decay on matrices (embeddings, projections, head), none on the RMSNorm gains.
        var matrices = parameters.Where(p => p.Value.dim() == 2).ToDictionary(p => p.Key, p => p.Value);
        var gains = parameters.Where(p => p.Value.dim() != 2).ToDictionary(p => p.Key, p => p.Value);
        using var decayed = new MaskedAdamW(matrices, null, o.LearningRate, 0.9, 0.95, 1e-8, o.WeightDecay);
        using var plain = new MaskedAdamW(gains, null, o.LearningRate, 0.9, 0.95, 1e-8, 0.0);

        var random = new Random(o.Seed);
        var log = new List<TrainLogEntry>();
        var clock = Stopwatch.StartNew();
        double windowLoss = 0;
        int windowSteps = 0;
        var ids = new long[o.Batch * TextData.SeqLen];
        for (var step = 1; step <= o.Steps; step++)
        {
            var lr = LearningRateAt(o, step);
            decayed.LearningRate = lr;
            plain.LearningRate = lr;
            for (var b = 0; b < o.Batch; b++)
            {
                var start = random.Next(0, train.Length - TextData.SeqLen + 1);
                for (var j = 0; j < TextData.SeqLen; j++)
                {
                    ids[b * TextData.SeqLen + j] = train[start + j];
                }
            }

            double lossValue;
            using (var scope = NewDisposeScope())
            {
                var tokens = tensor(ids, [o.Batch, TextData.SeqLen], ScalarType.Int64, device);
                var logits = model.Forward(tokens);
                var loss = Perplexity.Loss(logits, tokens);
                loss.backward();
                lossValue = loss.item<float>();
                ClipGradients(parameters.Values, o.ClipNorm);
            }
            decayed.Step();
            plain.Step();
            decayed.ZeroGrad();
            plain.ZeroGrad();
            if (!double.IsFinite(lossValue))
            {
                throw new InvalidOperationException($"Training diverged at step {step}: loss {lossValue}.");
            }

            windowLoss += lossValue;
            windowSteps++;
            if (step % o.LogEvery == 0 || step == o.Steps || step == 1)
            {
                var entry = new TrainLogEntry(step, lr, windowLoss / windowSteps, clock.Elapsed.TotalSeconds);
                log.Add(entry);
                Console.WriteLine($"train: step {step,5}/{o.Steps}  lr {lr:0.000e0}  loss {entry.Loss:0.0000} nats/byte " +
                                  $"(ppl {Math.Exp(entry.Loss):0.000})  {entry.Seconds,6:0}s");
                windowLoss = 0;
                windowSteps = 0;
            }
        }
        var seconds = clock.Elapsed.TotalSeconds;
        model.SetRequiresGrad(false);

        var heldOutResult = Perplexity.Evaluate(model, heldOut, 32, device);
        var calibrationResult = Perplexity.Evaluate(model, calibration, 32, device);
        Console.WriteLine($"train: held-out perplexity {heldOutResult.Value:0.0000} per byte over {heldOutResult.Tokens:N0} predictions " +
                          $"({Math.Log2(heldOutResult.Value):0.000} bits/byte); calibration slice {calibrationResult.Value:0.0000}");

        Save(model, config, modelDir);
        return new TrainSummary(o, count, train.Length, seconds, log, heldOutResult.Value, heldOutResult.Tokens, calibrationResult.Value);
    }

    private static double LearningRateAt(TrainOptions o, int step)
    {
        if (step <= o.Warmup)
        {
            return o.LearningRate * step / o.Warmup;
        }
        var progress = (double)(step - o.Warmup) / Math.Max(1, o.Steps - o.Warmup);
        return o.MinLearningRate + 0.5 * (o.LearningRate - o.MinLearningRate) * (1 + Math.Cos(Math.PI * progress));
    }

    private static void ClipGradients(IEnumerable<Tensor> weights, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var grads = weights.Select(w => w.grad).Where(g => g is not null).Select(g => g!).ToArray();
        var total = Math.Sqrt(grads.Sum(g => g.square().sum().item<float>()));
        if (total > maxNorm)
        {
            var factor = maxNorm / (total + 1e-6);
            foreach (var g in grads)
            {
                g.mul_(factor);
            }
        }
    }

    /// <summary>GPT-2-style initialization: N(0, 0.02), the residual outputs (o_proj, down_proj) scaled by 1/√(2·layers); norms at 1.</summary>
    private static Dictionary<string, Tensor> InitialWeights(LlamaConfig c, TrainOptions o)
    {
        const double std = 0.02;
        var residualStd = std / Math.Sqrt(2.0 * c.NumHiddenLayers);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        void Normal(string name, double s, params long[] shape) => result[name] = randn(shape).mul_(s);
        Normal("model.embed_tokens.weight", std, c.VocabSize, c.HiddenSize);
        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            var p = $"model.layers.{i}.";
            Normal(p + "self_attn.q_proj.weight", std, c.QueryWidth, c.HiddenSize);
            Normal(p + "self_attn.k_proj.weight", std, c.KeyValueWidth, c.HiddenSize);
            Normal(p + "self_attn.v_proj.weight", std, c.KeyValueWidth, c.HiddenSize);
            Normal(p + "self_attn.o_proj.weight", residualStd, c.HiddenSize, c.QueryWidth);
            Normal(p + "mlp.gate_proj.weight", std, c.IntermediateSize, c.HiddenSize);
            Normal(p + "mlp.up_proj.weight", std, c.IntermediateSize, c.HiddenSize);
            Normal(p + "mlp.down_proj.weight", residualStd, c.HiddenSize, c.IntermediateSize);
            result[p + "input_layernorm.weight"] = ones(c.HiddenSize);
            result[p + "post_attention_layernorm.weight"] = ones(c.HiddenSize);
        }
        result["model.norm.weight"] = ones(c.HiddenSize);
        Normal("lm_head.weight", std, c.VocabSize, c.HiddenSize);
        return result;
    }

    /// <summary>
    /// The model's tokenizer as a Hugging Face tokenizer.json: byte-level BPE with the 256 bytes as ids 0–255 (in GPT-2's
    /// byte alphabet) and no merges, no special tokens — so any UTF-8 text tokenizes to its bytes, which is what the
    /// model was trained on, and `shears run --eval FILE.txt` can read text for it.
    /// </summary>
    public static void WriteTokenizer(string dir)
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.Of((byte)b).ToString()] = b;
        var json = new
        {
            version = "1.0",
            added_tokens = Array.Empty<object>(),
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            post_processor = (object?)null,
            decoder = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            model = new { type = "BPE", dropout = (object?)null, unk_token = (object?)null, fuse_unk = false, byte_fallback = false, vocab, merges = Array.Empty<string>() },
        };
        File.WriteAllText(Path.Combine(dir, CheckpointTokenizer.JsonFileName), JsonSerializer.Serialize(json));
    }

    /// <summary>model.safetensors (F32, Hugging Face names), config.json and tokenizer.json, replacing what was there.</summary>
    private static void Save(LlamaModel model, LlamaConfig c, string dir)
    {
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }
        Directory.CreateDirectory(dir);
        var tensors = new List<(string Name, TensorDType DType, long[] Shape, byte[] Data)>();
        foreach (var (name, weight) in model.Parameters)
        {
            using var cpu = weight.detach().cpu().contiguous();
            var values = cpu.data<float>().ToArray();
            tensors.Add((name, TensorDType.F32, weight.shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray()));
        }
        ShardedCheckpointWriter.Write(dir, tensors, long.MaxValue, new Dictionary<string, string> { ["format"] = "pt" });

        var config = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["attention_bias"] = false,
            ["attention_dropout"] = 0,
            ["bos_token_id"] = null,
            ["eos_token_id"] = null,
            ["head_dim"] = c.HeadDim,
            ["hidden_act"] = "silu",
            ["hidden_size"] = c.HiddenSize,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = c.IntermediateSize,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["mlp_bias"] = false,
            ["num_attention_heads"] = c.NumAttentionHeads,
            ["num_hidden_layers"] = c.NumHiddenLayers,
            ["num_key_value_heads"] = c.NumKeyValueHeads,
            ["rms_norm_eps"] = c.RmsNormEps,
            ["rope_scaling"] = null,
            ["rope_theta"] = c.RopeTheta,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = "float32",
            ["vocab_size"] = c.VocabSize,
            ["tokenizer_note"] = "byte-level: token id = UTF-8 byte value (0-255); no special tokens",
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config, new JsonSerializerOptions { WriteIndented = true }));
        WriteTokenizer(dir);
    }
}
