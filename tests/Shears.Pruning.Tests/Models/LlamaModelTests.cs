using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Pruning.Tests.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Models;

public class LlamaModelTests
{
    private static readonly DemoCheckpointOptions Demo =
        new(HiddenSize: 64, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128);

    private static readonly long[][] Ids = [[1, 5, 9, 127, 0, 3], [64, 2, 2, 7, 100, 11]];

    /// <summary>The checkpoint's values widened to double by FloatBits, apart from the code under test.</summary>
    private static Dictionary<string, float[]> Values(CheckpointManifest m) =>
        m.Tensors.ToDictionary(t => t.Name, t =>
        {
            var bytes = CheckpointReader.ReadTensor(m, t);
            return Enumerable.Range(0, (int)t.ElementCount).Select(i => FloatBits.BFloat16ToSingle(BitConverter.ToUInt16(bytes, i * 2))).ToArray();
        });

    private static float[] Logits(LlamaModel model)
    {
        using var scope = NewDisposeScope();
        var ids = tensor(Ids.SelectMany(r => r).ToArray(), [Ids.Length, Ids[0].Length]);
        var logits = model.Forward(ids);
        Assert.Equal([2L, 6, 128], logits.shape);
        return logits.data<float>().ToArray();
    }

    private static void AssertClose(double[][][] expected, float[] actual, double tolerance)
    {
        var flat = expected.SelectMany(s => s.SelectMany(h => h)).ToArray();
        Assert.Equal(flat.Length, actual.Length);
        var max = flat.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(max < tolerance, $"max |difference| {max}");
    }

    [Fact]
    public void LoadsABf16CheckpointAndMatchesTheNaiveForward()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, Demo);
        var manifest = CheckpointReader.ReadManifest(dir.Path);

        using var model = LlamaModel.Load(dir.Path, CPU);

        Assert.Equal(3 + 2 * 9, model.Parameters.Count);
        Assert.Equal(manifest.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal), model.Parameters.Keys.Order(StringComparer.Ordinal));
        Assert.All(model.Parameters.Values, p => Assert.Equal(ScalarType.Float32, p.dtype));
        var values = Values(manifest);
        Assert.Equal(values["model.layers.1.mlp.down_proj.weight"], model.Parameters["model.layers.1.mlp.down_proj.weight"].data<float>().ToArray());

        var logits = Logits(model);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        AssertClose(NaiveLlama.Logits(model.Config, values, Ids), logits, 1e-4);
    }

    [Fact]
    public void StagesBuiltApartFromTheirOwnTensorsGiveTheSameLogits()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, Demo);
        var manifest = CheckpointReader.ReadManifest(dir.Path);
        using var model = LlamaModel.Load(dir.Path, CPU);
        var config = LlamaConfig.Load(dir.Path);

        // As grains would: each stage reads only its own tensors.
        var stages = new List<LlamaStage>();
        try
        {
            var t = LlamaWeights.Read(manifest, LlamaWeights.EmbeddingNames(), CPU, ScalarType.Float32);
            stages.Add(LlamaEmbedding.FromTensors(config, t, CPU));
            RandomLlama.DisposeAll(t);
            for (var i = 0; i < config.NumHiddenLayers; i++)
            {
                t = LlamaWeights.Read(manifest, LlamaWeights.LayerNames(manifest, i), CPU, ScalarType.Float32);
                Assert.Equal(9, t.Count);
                stages.Add(LlamaDecoderLayer.FromTensors(config, i, t, CPU));
                RandomLlama.DisposeAll(t);
            }
            t = LlamaWeights.Read(manifest, LlamaWeights.HeadNames(config), CPU, ScalarType.Float32);
            stages.Add(LlamaHead.FromTensors(config, t, CPU));
            RandomLlama.DisposeAll(t);

            using var scope = NewDisposeScope();
            var x = tensor(Ids.SelectMany(r => r).ToArray(), [2, 6]);
            foreach (var stage in stages)
            {
                x = stage.Forward(x);
            }
            Assert.Equal(Logits(model), x.data<float>().ToArray());
        }
        finally
        {
            stages.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public void TiedEmbeddingsUseTheEmbeddingMatrixAsTheHead()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, Demo);
        var configPath = Path.Combine(dir.Path, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(configPath))!;
        json["tie_word_embeddings"] = true;
        File.WriteAllText(configPath, json.ToJsonString());
        var manifest = CheckpointReader.ReadManifest(dir.Path);

        using var model = LlamaModel.Load(dir.Path, CPU);

        Assert.Same(model.Embedding.Weight, model.Head.OutputWeight);
        Assert.False(model.Parameters.ContainsKey("lm_head.weight"), "a tied checkpoint's lm_head.weight is ignored, as transformers does");
        Assert.Equal(2 + 2 * 9, model.Parameters.Count);
        var values = Values(manifest);
        values.Remove("lm_head.weight");
        AssertClose(NaiveLlama.Logits(model.Config, values, Ids), Logits(model), 1e-4);

        // A head grain of a tied model holds its own copy of the embedding matrix.
        var t = LlamaWeights.Read(manifest, LlamaWeights.HeadNames(model.Config), CPU, ScalarType.Float32);
        try
        {
            Assert.Equal(["model.norm.weight", "model.embed_tokens.weight"], t.Keys);
            using var head = LlamaHead.FromTensors(model.Config, t, CPU);
            Assert.True(head.OutputWeight.equal(model.Embedding.Weight).all().item<bool>());
        }
        finally
        {
            RandomLlama.DisposeAll(t);
        }
    }

    [Fact]
    public void LoadsInAnotherDtype()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, Demo);
        using var model = LlamaModel.Load(dir.Path, CPU, ScalarType.BFloat16);
        using var full = LlamaModel.Load(dir.Path, CPU);

        Assert.All(model.Parameters.Values, p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        using var scope = NewDisposeScope();
        var ids = tensor(Ids.SelectMany(r => r).ToArray(), [2, 6]);
        var low = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, low.dtype);
        Assert.True(low.to(ScalarType.Float32).allclose(full.Forward(ids), rtol: 0.05, atol: 0.05));
    }

    [Fact]
    public void AMissingTensorNamesTheCheckpointAndTheTensor()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, Demo);
        var configPath = Path.Combine(dir.Path, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(configPath))!;
        json["num_hidden_layers"] = 3;
        File.WriteAllText(configPath, json.ToJsonString());

        var e = Assert.Throws<CheckpointFormatException>(() => LlamaModel.Load(dir.Path, CPU));

        Assert.Contains(dir.Path, e.Message);
        Assert.Contains("model.layers.2.input_layernorm.weight", e.Message);
    }

    [Fact]
    public void GradientsFlowAcrossStageBoundariesAsInOneGraph()
    {
        var config = RandomLlama.Config(vocab: 32);
        var weights = RandomLlama.Weights(config, seed: 5);
        var a = RandomLlama.Tensors(config, weights);
        var b = RandomLlama.Tensors(config, weights);
        try
        {
            using var whole = LlamaModel.FromTensors(config, a, CPU);
            using var piped = LlamaModel.FromTensors(config, b, CPU);
            whole.SetRequiresGrad(true);
            piped.SetRequiresGrad(true);
            using var scope = NewDisposeScope();
            var ids = tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3 }, [2, 5]);

            Perplexity.Loss(whole.Forward(ids), ids).backward();

            // A pipeline: each stage gets a detached input, and sends back the gradient of that input.
            var inputs = new List<Tensor>();
            var outputs = new List<Tensor>();
            Tensor x = ids;
            foreach (var stage in piped.Stages)
            {
                var input = stage == piped.Embedding ? x : x.detach().requires_grad_(true);
                inputs.Add(input);
                x = stage.Forward(input);
                outputs.Add(x);
            }
            Perplexity.Loss(outputs[^1], ids).backward();
            for (var s = piped.Stages.Count - 2; s >= 0; s--)
            {
                outputs[s].backward([inputs[s + 1].grad!]);
            }

            foreach (var (name, weight) in whole.Parameters)
            {
                var expected = weight.grad;
                var actual = piped.Parameters[name].grad;
                Assert.NotNull(expected);
                Assert.NotNull(actual);
                Assert.True(expected.abs().sum().item<float>() > 0, $"{name} has a gradient");
                Assert.True(actual.allclose(expected, rtol: 1e-5, atol: 1e-7), $"{name}: pipeline gradient differs");
            }
        }
        finally
        {
            RandomLlama.DisposeAll(a);
            RandomLlama.DisposeAll(b);
        }
    }
}
