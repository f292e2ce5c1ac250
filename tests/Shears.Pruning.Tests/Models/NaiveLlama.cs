using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Models;

/// <summary>
/// A LLaMA forward pass written independently of Shears.Pruning.Models, in double precision with explicit
/// loops: RMSNorm, rotary pairs (i, i + d/2) by cos/sin, causal softmax attention per head, SiLU MLP.
/// </summary>
internal static class NaiveLlama
{
    public static double[][][] Embed(LlamaConfig c, IReadOnlyDictionary<string, float[]> w, long[][] ids)
    {
        var table = w["model.embed_tokens.weight"];
        return ids.Select(row => row.Select(id => Enumerable.Range(0, c.HiddenSize)
            .Select(i => (double)table[id * c.HiddenSize + i]).ToArray()).ToArray()).ToArray();
    }

    public static double[][][] Logits(LlamaConfig c, IReadOnlyDictionary<string, float[]> w, long[][] ids)
    {
        var x = Embed(c, w, ids);
        for (var l = 0; l < c.NumHiddenLayers; l++)
        {
            x = Layer(c, l, w, x);
        }
        var output = w[c.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"];
        return x.Select(seq => seq.Select(h =>
            Linear(RmsNorm(h, w["model.norm.weight"], c.RmsNormEps), output, null, c.VocabSize, c.HiddenSize)).ToArray()).ToArray();
    }

    public static double[][][] Layer(LlamaConfig c, int layer, IReadOnlyDictionary<string, float[]> w, double[][][] input)
    {
        var p = $"model.layers.{layer}.";
        float[]? Bias(string name) => w.TryGetValue(p + name, out var b) ? b : null;
        int hidden = c.HiddenSize, d = c.HeadDim, heads = c.NumAttentionHeads, kvHeads = c.NumKeyValueHeads;
        var invFreq = InverseFrequencies(c);
        var output = new double[input.Length][][];

        for (var b = 0; b < input.Length; b++)
        {
            var x = input[b];
            var length = x.Length;
            var q = new double[length][];
            var k = new double[length][];
            var v = new double[length][];
            for (var t = 0; t < length; t++)
            {
                var n = RmsNorm(x[t], w[p + "input_layernorm.weight"], c.RmsNormEps);
                q[t] = Linear(n, w[p + "self_attn.q_proj.weight"], Bias("self_attn.q_proj.bias"), heads * d, hidden);
                k[t] = Linear(n, w[p + "self_attn.k_proj.weight"], Bias("self_attn.k_proj.bias"), kvHeads * d, hidden);
                v[t] = Linear(n, w[p + "self_attn.v_proj.weight"], Bias("self_attn.v_proj.bias"), kvHeads * d, hidden);
                if (c.QueryKeyNorm)
                {
                    // Qwen3: every head's query and key RMS-normalized over head_dim, before the rotation.
                    for (var h = 0; h < heads; h++) NormalizeHead(q[t], h * d, d, w[p + "self_attn.q_norm.weight"], c.RmsNormEps);
                    for (var h = 0; h < kvHeads; h++) NormalizeHead(k[t], h * d, d, w[p + "self_attn.k_norm.weight"], c.RmsNormEps);
                }
                for (var h = 0; h < heads; h++)
                {
                    Rotate(q[t], h * d, d, t, invFreq);
                }
                for (var h = 0; h < kvHeads; h++)
                {
                    Rotate(k[t], h * d, d, t, invFreq);
                }
            }

            output[b] = new double[length][];
            for (var t = 0; t < length; t++)
            {
                var attended = new double[heads * d];
                for (var h = 0; h < heads; h++)
                {
                    var g = h / (heads / kvHeads); // the key/value head this query head shares
                    // A sliding window of w: the query at t reads the keys at t − w + 1 … t.
                    var first = c.WindowOf(layer) is { } window ? Math.Max(0, t - window + 1) : 0;
                    var scores = Enumerable.Repeat(double.NegativeInfinity, t + 1).ToArray();
                    for (var u = first; u <= t; u++)
                    {
                        double dot = 0;
                        for (var j = 0; j < d; j++)
                        {
                            dot += q[t][h * d + j] * k[u][g * d + j];
                        }
                        scores[u] = dot / Math.Sqrt(d);
                    }
                    var max = scores.Max();
                    var weights = scores.Select(s => double.IsNegativeInfinity(s) ? 0 : Math.Exp(s - max)).ToArray();
                    var total = weights.Sum();
                    for (var u = 0; u <= t; u++)
                    {
                        for (var j = 0; j < d; j++)
                        {
                            attended[h * d + j] += weights[u] / total * v[u][g * d + j];
                        }
                    }
                }
                var o = Linear(attended, w[p + "self_attn.o_proj.weight"], Bias("self_attn.o_proj.bias"), hidden, heads * d);
                var h1 = x[t].Zip(o, (a, e) => a + e).ToArray();

                var m = RmsNorm(h1, w[p + "post_attention_layernorm.weight"], c.RmsNormEps);
                var gate = Linear(m, w[p + "mlp.gate_proj.weight"], Bias("mlp.gate_proj.bias"), c.IntermediateSize, hidden);
                var up = Linear(m, w[p + "mlp.up_proj.weight"], Bias("mlp.up_proj.bias"), c.IntermediateSize, hidden);
                var product = gate.Zip(up, (a, e) => a / (1 + Math.Exp(-a)) * e).ToArray();
                var down = Linear(product, w[p + "mlp.down_proj.weight"], Bias("mlp.down_proj.bias"), hidden, c.IntermediateSize);
                output[b][t] = h1.Zip(down, (a, e) => a + e).ToArray();
            }
        }
        return output;
    }

    /// <summary>theta^(−2i/d), with Llama 3.1's scaling written from its description.</summary>
    public static double[] InverseFrequencies(LlamaConfig c)
    {
        var d = c.HeadDim;
        var inv = Enumerable.Range(0, d / 2).Select(i => Math.Pow(c.RopeTheta, -2.0 * i / d)).ToArray();
        if (c.RopeScaling is { RopeType: "linear" } linear)
        {
            return inv.Select(f => f / linear.Factor).ToArray();
        }
        if (c.RopeScaling is { RopeType: "llama3" } s)
        {
            double old = s.OriginalMaxPositionEmbeddings;
            return inv.Select(f =>
            {
                var wavelength = 2 * Math.PI / f;
                if (wavelength < old / s.HighFreqFactor)
                {
                    return f; // high frequencies untouched
                }
                if (wavelength > old / s.LowFreqFactor)
                {
                    return f / s.Factor; // low frequencies scaled
                }
                var smooth = (old / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                return (1 - smooth) * f / s.Factor + smooth * f;
            }).ToArray();
        }
        return inv;
    }

    /// <summary>Rotates each pair (i, i + d/2) of one head by the angle position × inv_freq[i].</summary>
    private static void Rotate(double[] vector, int offset, int d, int position, double[] invFreq)
    {
        for (var i = 0; i < d / 2; i++)
        {
            var angle = position * invFreq[i];
            var (cos, sin) = (Math.Cos(angle), Math.Sin(angle));
            var a = vector[offset + i];
            var b = vector[offset + i + d / 2];
            vector[offset + i] = a * cos - b * sin;
            vector[offset + i + d / 2] = b * cos + a * sin;
        }
    }

    private static void NormalizeHead(double[] vector, int offset, int d, float[] weight, double eps)
    {
        var normalized = RmsNorm(vector[offset..(offset + d)], weight, eps);
        Array.Copy(normalized, 0, vector, offset, d);
    }

    private static double[] RmsNorm(double[] x, float[] weight, double eps)
    {
        var meanSquare = x.Sum(e => e * e) / x.Length;
        var scale = 1 / Math.Sqrt(meanSquare + eps);
        return x.Select((e, i) => e * scale * weight[i]).ToArray();
    }

    private static double[] Linear(double[] x, float[] weight, float[]? bias, int outputs, int inputs)
    {
        var y = new double[outputs];
        for (var o = 0; o < outputs; o++)
        {
            double sum = bias?[o] ?? 0;
            for (var i = 0; i < inputs; i++)
            {
                sum += weight[o * inputs + i] * x[i];
            }
            y[o] = sum;
        }
        return y;
    }
}

/// <summary>Seeded random weights by Hugging Face name, as arrays (for the naive model) and as tensors.</summary>
internal static class RandomLlama
{
    public static LlamaConfig Config(int layers = 2, int vocab = 32, bool tied = false) => new(
        HiddenSize: 16, IntermediateSize: 24, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 4,
        NumHiddenLayers: layers, VocabSize: vocab, RmsNormEps: 1e-5, TieWordEmbeddings: tied);

    public static Dictionary<string, float[]> Weights(LlamaConfig c, int seed, bool attentionBias = false, bool mlpBias = false)
    {
        var random = new Random(seed);
        var w = new Dictionary<string, float[]>(StringComparer.Ordinal);
        float[] Draw(long count, double mean, double std) =>
            Enumerable.Range(0, (int)count).Select(_ => (float)(mean + std * Normal(random))).ToArray();

        int hidden = c.HiddenSize, q = c.QueryWidth, kv = c.KeyValueWidth, inter = c.IntermediateSize;
        w["model.embed_tokens.weight"] = Draw(c.VocabSize * hidden, 0, 1);
        for (var l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = $"model.layers.{l}.";
            w[p + "input_layernorm.weight"] = Draw(hidden, 1, 0.2);
            w[p + "self_attn.q_proj.weight"] = Draw(q * hidden, 0, 0.4);
            w[p + "self_attn.k_proj.weight"] = Draw(kv * hidden, 0, 0.4);
            w[p + "self_attn.v_proj.weight"] = Draw(kv * hidden, 0, 0.3);
            w[p + "self_attn.o_proj.weight"] = Draw(hidden * q, 0, 0.3);
            w[p + "post_attention_layernorm.weight"] = Draw(hidden, 1, 0.2);
            w[p + "mlp.gate_proj.weight"] = Draw(inter * hidden, 0, 0.3);
            w[p + "mlp.up_proj.weight"] = Draw(inter * hidden, 0, 0.3);
            w[p + "mlp.down_proj.weight"] = Draw(hidden * inter, 0, 0.2);
            if (attentionBias)
            {
                w[p + "self_attn.q_proj.bias"] = Draw(q, 0, 0.1);
                w[p + "self_attn.k_proj.bias"] = Draw(kv, 0, 0.1);
                w[p + "self_attn.v_proj.bias"] = Draw(kv, 0, 0.1);
                w[p + "self_attn.o_proj.bias"] = Draw(hidden, 0, 0.1);
            }
            if (c.QueryKeyNorm)
            {
                w[p + "self_attn.q_norm.weight"] = Draw(c.HeadDim, 1, 0.2);
                w[p + "self_attn.k_norm.weight"] = Draw(c.HeadDim, 1, 0.2);
            }
            if (mlpBias)
            {
                w[p + "mlp.gate_proj.bias"] = Draw(inter, 0, 0.1);
                w[p + "mlp.up_proj.bias"] = Draw(inter, 0, 0.1);
                w[p + "mlp.down_proj.bias"] = Draw(hidden, 0, 0.1);
            }
        }
        w["model.norm.weight"] = Draw(hidden, 1, 0.2);
        if (!c.TieWordEmbeddings)
        {
            w["lm_head.weight"] = Draw(c.VocabSize * hidden, 0, 0.3);
        }
        return w;
    }

    /// <summary>The arrays as float32 CPU tensors of their Hugging Face shapes; the caller disposes them.</summary>
    public static Dictionary<string, Tensor> Tensors(LlamaConfig c, IReadOnlyDictionary<string, float[]> w)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, values) in w)
        {
            result[name] = tensor(values, Shape(c, name), ScalarType.Float32).DetachFromDisposeScope();
        }
        return result;
    }

    public static void DisposeAll(IReadOnlyDictionary<string, Tensor> tensors)
    {
        foreach (var t in tensors.Values)
        {
            t.Dispose();
        }
    }

    public static double Normal(Random random)
    {
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    private static long[] Shape(LlamaConfig c, string name)
    {
        long hidden = c.HiddenSize, q = c.QueryWidth, kv = c.KeyValueWidth, inter = c.IntermediateSize, vocab = c.VocabSize;
        var leaf = name[(name.IndexOf("layers.", StringComparison.Ordinal) is var i and >= 0 ? name.IndexOf('.', i + 7) + 1 : 0)..];
        return leaf switch
        {
            "model.embed_tokens.weight" or "lm_head.weight" => [vocab, hidden],
            "model.norm.weight" or "input_layernorm.weight" or "post_attention_layernorm.weight" => [hidden],
            "self_attn.q_proj.weight" => [q, hidden],
            "self_attn.k_proj.weight" or "self_attn.v_proj.weight" => [kv, hidden],
            "self_attn.o_proj.weight" => [hidden, q],
            "mlp.gate_proj.weight" or "mlp.up_proj.weight" => [inter, hidden],
            "mlp.down_proj.weight" => [hidden, inter],
            "self_attn.q_proj.bias" => [q],
            "self_attn.q_norm.weight" or "self_attn.k_norm.weight" => [c.HeadDim],
            "self_attn.k_proj.bias" or "self_attn.v_proj.bias" => [kv],
            "self_attn.o_proj.bias" or "mlp.down_proj.bias" => [hidden],
            "mlp.gate_proj.bias" or "mlp.up_proj.bias" => [inter],
            _ => throw new ArgumentException($"No shape known for '{name}'."),
        };
    }
}
