using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Models;

public class LlamaDecoderLayerTests
{
    public static TheoryData<string> Shapes => ["gqa", "mha-biases", "head-dim-llama3", "linear-rope", "qwen3-qk-norm", "qwen2-sliding-window"];

    private static (LlamaConfig Config, bool AttentionBias, bool MlpBias) Case(string name) => name switch
    {
        // Two query heads per key/value head, no biases, rope_theta 10000.
        "gqa" => (RandomLlama.Config(), false, false),
        // Every head its own key/value head, biases on all projections, rope_theta 500000.
        "mha-biases" => (RandomLlama.Config() with { NumKeyValueHeads = 4, RopeTheta = 500000, AttentionBias = true, MlpBias = true }, true, true),
        // head_dim set apart from hidden/heads (3 × 6 ≠ 16), one key/value head, Llama 3.1 scaling that
        // leaves the fastest frequency alone, blends the next and divides the slowest.
        "head-dim-llama3" => (RandomLlama.Config() with
        {
            NumAttentionHeads = 3, NumKeyValueHeads = 1, HeadDim = 8,
            RopeScaling = new LlamaRopeScaling("llama3", Factor: 8, LowFreqFactor: 0.2, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 32),
        }, false, false),
        "linear-rope" => (RandomLlama.Config() with { RopeScaling = new LlamaRopeScaling("linear", Factor: 2) }, false, true),
        // Qwen3: every query and key head RMS-normalized before the rotation; head_dim 6 sets the query width (24) apart from hidden (16).
        "qwen3-qk-norm" => (RandomLlama.Config() with { ModelType = "qwen3", HeadDim = 6 }, false, false),
        // Qwen2 with a sliding window of 3 from layer 1 on (the tested layer): a query reads itself and the 2 keys before it.
        "qwen2-sliding-window" => (RandomLlama.Config() with { ModelType = "qwen2", SlidingWindow = 3, SlidingWindowFromLayer = 1 }, true, false),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesANaiveImplementationOnRandomWeights(string shape)
    {
        var (config, attentionBias, mlpBias) = Case(shape);
        var weights = RandomLlama.Weights(config, seed: 7, attentionBias, mlpBias);
        var tensors = RandomLlama.Tensors(config, weights);
        try
        {
            using var layer = LlamaDecoderLayer.FromTensors(config, 1, tensors, CPU);
            var random = new Random(11);
            const int batch = 2, length = 7;
            var input = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, length)
                .Select(_ => Enumerable.Range(0, config.HiddenSize).Select(_ => (double)(float)RandomLlama.Normal(random)).ToArray()).ToArray()).ToArray();

            using var scope = NewDisposeScope();
            var flat = input.SelectMany(s => s.SelectMany(h => h.Select(v => (float)v))).ToArray();
            var output = layer.Forward(tensor(flat, [batch, length, config.HiddenSize])).data<float>().ToArray();
            var expected = NaiveLlama.Layer(config, 1, weights, input).SelectMany(s => s.SelectMany(h => h)).ToArray();

            Assert.Equal(expected.Length, output.Length);
            var maxDifference = expected.Zip(output, (e, o) => Math.Abs(e - o)).Max();
            Assert.True(maxDifference < 1e-5, $"max |difference| {maxDifference}");
            Assert.True(expected.Max(Math.Abs) > 1, "the test's values are not vanishingly small");
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    /// <summary>
    /// A layer split in two stages (attention, then MLP) computes bit for bit what the whole layer computes, each half
    /// built from its own tensors only; a half asked for the other half's weights says so.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void TheAttentionThenTheMlpHalfEqualTheWholeLayer(string shape)
    {
        var (config, attentionBias, mlpBias) = Case(shape);
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 9, attentionBias, mlpBias));
        try
        {
            Dictionary<string, Tensor> Half(LlamaLayerPart part) => tensors
                .Where(t => t.Key.StartsWith("model.layers.1.", StringComparison.Ordinal) && LlamaWeights.PartOf(t.Key) == part)
                .ToDictionary(t => t.Key, t => t.Value, StringComparer.Ordinal);
            var attentionTensors = Half(LlamaLayerPart.Attention);
            var mlpTensors = Half(LlamaLayerPart.Mlp);
            Assert.Contains("model.layers.1.self_attn.o_proj.weight", attentionTensors.Keys);
            Assert.Contains("model.layers.1.input_layernorm.weight", attentionTensors.Keys);
            Assert.Equal(["model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.layers.1.post_attention_layernorm.weight"],
                mlpTensors.Keys.Where(k => k.EndsWith(".weight", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
            using var whole = LlamaDecoderLayer.FromTensors(config, 1, tensors, CPU);
            using var attention = LlamaDecoderLayer.FromTensors(config, 1, attentionTensors, CPU, part: LlamaLayerPart.Attention);
            using var mlp = LlamaDecoderLayer.FromTensors(config, 1, mlpTensors, CPU, part: LlamaLayerPart.Mlp);
            // A whole checkpoint's map will do for a half too: the other half's tensors are ignored.
            using var fromAll = LlamaDecoderLayer.FromTensors(config, 1, tensors, CPU, part: LlamaLayerPart.Mlp);

            using var scope = NewDisposeScope();
            manual_seed(13);
            var x = randn(2, 7, config.HiddenSize);
            var expected = whole.Forward(x);
            var halfway = attention.Forward(x);
            Assert.False(halfway.equal(x).all().item<bool>());
            Assert.True(mlp.Forward(halfway).equal(expected).all().item<bool>(), "attention then MLP differs from the whole layer");
            Assert.True(fromAll.Forward(halfway).equal(expected).all().item<bool>());
            Assert.Contains("holds no MLP weights", Assert.Throws<InvalidOperationException>(() => attention.GateProj).Message);
            Assert.Contains("holds no attention weights", Assert.Throws<InvalidOperationException>(() => mlp.QProj).Message);
            Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config, 1, mlpTensors, CPU, part: LlamaLayerPart.Attention));
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void IsCausal()
    {
        var config = RandomLlama.Config();
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 3));
        try
        {
            using var layer = LlamaDecoderLayer.FromTensors(config, 0, tensors, CPU);
            using var scope = NewDisposeScope();
            manual_seed(5);
            var x = randn(1, 6, config.HiddenSize);
            var changed = x.clone();
            changed[0, 4] = randn(config.HiddenSize);

            var a = layer.Forward(x);
            var b = layer.Forward(changed);

            Assert.True(a.narrow(1, 0, 4).equal(b.narrow(1, 0, 4)).all().item<bool>(), "positions before the change are unaffected");
            Assert.False(a.narrow(1, 4, 2).allclose(b.narrow(1, 4, 2)), "positions from the change on see it");
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void ASlidingWindowHidesTheKeysItHasLeftBehind()
    {
        // Window 3 in layer 1 only: there the output at position 5 reads positions 3..5, and a change at 1 reaches 1..3.
        var config = RandomLlama.Config() with { ModelType = "mistral", SlidingWindow = 3, SlidingWindowFromLayer = 1 };
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 3));
        try
        {
            using var windowed = LlamaDecoderLayer.FromTensors(config, 1, tensors, CPU);
            using var full = LlamaDecoderLayer.FromTensors(config, 0, tensors, CPU);
            Assert.Equal(3, windowed.Window);
            Assert.Null(full.Window);
            using var scope = NewDisposeScope();
            manual_seed(5);
            var x = randn(1, 6, config.HiddenSize);
            var changed = x.clone();
            changed[0, 1] = randn(config.HiddenSize);

            var a = windowed.Forward(x);
            var b = windowed.Forward(changed);
            Assert.True(a.narrow(1, 0, 1).equal(b.narrow(1, 0, 1)).all().item<bool>(), "before the change");
            Assert.False(a.narrow(1, 3, 1).allclose(b.narrow(1, 3, 1)), "position 3 still reads position 1");
            Assert.True(a.narrow(1, 4, 2).equal(b.narrow(1, 4, 2)).all().item<bool>(), "positions 4 and 5 no longer read position 1");
            Assert.False(full.Forward(x).narrow(1, 5, 1).allclose(full.Forward(changed).narrow(1, 5, 1)), "layer 0 attends to everything before");
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void SharesStorageWithTheGivenTensorsAndExposesThemByName()
    {
        var config = RandomLlama.Config();
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 3));
        try
        {
            using var layer = LlamaDecoderLayer.FromTensors(config, 1, tensors, CPU);
            Assert.Equal(9, layer.Parameters.Count);
            Assert.All(layer.Parameters.Keys, name => Assert.StartsWith("model.layers.1.", name));

            using (no_grad())
            {
                layer.Parameters["model.layers.1.mlp.up_proj.weight"].zero_();
            }
            Assert.Equal(0f, tensors["model.layers.1.mlp.up_proj.weight"].abs().sum().item<float>());
            Assert.False(tensors["model.layers.1.mlp.up_proj.weight"].requires_grad);
            layer.SetRequiresGrad(true);
            Assert.False(tensors["model.layers.1.mlp.up_proj.weight"].requires_grad, "the caller's tensor keeps its own flag");
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void MissingOrMisshapenTensorsAreNamed()
    {
        var config = RandomLlama.Config();
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 3));
        try
        {
            var without = tensors.Where(p => p.Key != "model.layers.0.mlp.gate_proj.weight").ToDictionary();
            var missing = Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config, 0, without, CPU));
            Assert.Contains("model.layers.0.mlp.gate_proj.weight", missing.Message);

            using var wrong = zeros(5, 16);
            var misshapen = new Dictionary<string, Tensor>(tensors) { ["model.layers.0.self_attn.k_proj.weight"] = wrong };
            var shape = Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config, 0, misshapen, CPU));
            Assert.Contains("model.layers.0.self_attn.k_proj.weight", shape.Message);
            Assert.Contains("[8, 16]", shape.Message);

            var biasRequired = Assert.Throws<ArgumentException>(() =>
                LlamaDecoderLayer.FromTensors(config with { AttentionBias = true }, 0, tensors, CPU));
            Assert.Contains("model.layers.0.self_attn.q_proj.bias", biasRequired.Message);

            Assert.Throws<ArgumentOutOfRangeException>(() => LlamaDecoderLayer.FromTensors(config, 2, tensors, CPU));

            // A tensor of the layer that its model_type does not compute is refused, not ignored; a buffer of older exports is not a weight.
            using var extra = ones(16);
            var unknown = new Dictionary<string, Tensor>(tensors) { ["model.layers.0.self_attn.q_layernorm.weight"] = extra };
            Assert.Contains("model.layers.0.self_attn.q_layernorm.weight", Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config, 0, unknown, CPU)).Message);
            using var norm = ones(config.HeadDim);
            var qwen3Norm = new Dictionary<string, Tensor>(tensors) { ["model.layers.0.self_attn.q_norm.weight"] = norm };
            Assert.Contains("\"qwen3\"", Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config, 0, qwen3Norm, CPU)).Message);
            Assert.Contains("model.layers.0.self_attn.k_norm.weight",
                Assert.Throws<ArgumentException>(() => LlamaDecoderLayer.FromTensors(config with { ModelType = "qwen3" }, 0, qwen3Norm, CPU)).Message);
            using var frequencies = ones(config.HeadDim / 2);
            var buffer = new Dictionary<string, Tensor>(tensors) { ["model.layers.0.self_attn.rotary_emb.inv_freq"] = frequencies };
            using (var layer = LlamaDecoderLayer.FromTensors(config, 0, buffer, CPU)) Assert.Equal(9, layer.Parameters.Count);
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }
}
