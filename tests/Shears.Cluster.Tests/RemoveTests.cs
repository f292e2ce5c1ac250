using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>--remove over three silos: the smaller model read back from its files computes what the masked model computed.</summary>
[Collection(ClusterCollection.Name)]
public class RemoveTests(ClusterFixture fixture)
{
    private static readonly DemoCheckpointOptions Small = QuantizeTests.Small;

    internal static double Perplexity(string checkpoint, string eval)
    {
        using var model = LlamaModel.Load(checkpoint, torch.CPU);
        return Shears.Pruning.Models.Perplexity.Evaluate(model, EvalData.LoadTokenIds(eval, 128), 4, torch.CPU).Value;
    }

    private static float[] Weights(string checkpoint, string name) => QuantizeTests.Weights(checkpoint, name);

    /// <summary>
    /// The demo checkpoint as a model family: LLaMA; Qwen2 (q/k/v biases, a sliding window of 6 from layer 1 on, shorter
    /// than the evaluation's sequences); Qwen3 (query/key norms, head_dim 24 apart from hidden/heads, tied embeddings).
    /// </summary>
    internal static DemoCheckpointOptions Family(string family, DemoCheckpointOptions options) => family switch
    {
        "llama" => options,
        "qwen2" => options with { ModelType = "qwen2", SlidingWindow = 6 },
        "qwen3" => options with { ModelType = "qwen3", HeadDim = 24, TieWordEmbeddings = true },
        _ => throw new ArgumentException(family),
    };

    [Theory]
    [InlineData("neurons", 0.25, "llama")]
    [InlineData("heads", 0.5, "llama")]
    [InlineData("heads", 0.5, "qwen2")]
    [InlineData("neurons", 0.25, "qwen3")]
    [InlineData("heads", 0.5, "qwen3")]
    public async Task TheRemovedModelComputesWhatTheMaskedModelComputed(string pattern, double sparsity, string family)
    {
        using var dir = new TempDir();
        // Without --remove, heads are ranked over the whole layer; with it, each key/value group loses its own share. The
        // Qwen cases have one key/value head per query head, so both runs choose alike whatever the weights.
        var small = family != "llama" && pattern == "heads" ? Family(family, Small) with { KvHeads = Small.Heads } : Family(family, Small);
        DemoCheckpoint.Write(dir.Sub("in"), small);
        string eval = QuantizeTests.TokenFile(dir.Path, 6, 20, 5);
        var masked = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("masked"), Sparsity = sparsity, Pattern = pattern, Scope = "layer", EvalData = eval };
        var maskedStatus = await Runs.RunToEndAsync(fixture.Cluster.Client, masked);
        Assert.True(maskedStatus.State == RunState.Completed, maskedStatus.Error);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, masked with { OutputPath = dir.Sub("removed"), Remove = true });
        Assert.True(status.State == RunState.Completed, status.Error);

        // The config's sizes and every cut tensor's shape.
        var config = LlamaConfig.Load(dir.Sub("removed"));
        var output = CheckpointReader.ReadManifest(dir.Sub("removed"));
        int hidden = Small.HiddenSize, headDim = small.HeadDim ?? Small.HiddenSize / Small.Heads;
        int inter = Small.IntermediateSize - (int)Math.Round(sparsity * Small.IntermediateSize, MidpointRounding.ToEven);
        // Grouped-query attention: each key/value group of 2 query heads loses round_half_to_even(0.5 × 2) = 1.
        int heads = pattern == "heads" ? Small.Heads / 2 : Small.Heads;
        int kvHeads = small.KvHeads == small.Heads ? heads : small.KvHeads;
        Assert.Equal(pattern == "neurons" ? inter : Small.IntermediateSize, config.IntermediateSize);
        Assert.Equal(heads, config.NumAttentionHeads);
        Assert.Equal(kvHeads, config.NumKeyValueHeads);
        Assert.Equal(headDim, config.HeadDim);
        var raw = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "config.json")))!.AsObject();
        if (pattern == "heads") Assert.Equal(headDim, (int)raw["head_dim"]!);
        for (int l = 0; l < Small.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Assert.Equal([config.IntermediateSize, hidden], output.Get(p + "mlp.gate_proj.weight").Shape);
            Assert.Equal([config.IntermediateSize, hidden], output.Get(p + "mlp.up_proj.weight").Shape);
            Assert.Equal([hidden, config.IntermediateSize], output.Get(p + "mlp.down_proj.weight").Shape);
            Assert.Equal([heads * headDim, hidden], output.Get(p + "self_attn.q_proj.weight").Shape);
            Assert.Equal([kvHeads * headDim, hidden], output.Get(p + "self_attn.k_proj.weight").Shape);
            Assert.Equal([hidden, heads * headDim], output.Get(p + "self_attn.o_proj.weight").Shape);
            if (family == "qwen2")
            {
                Assert.Equal([heads * headDim], output.Get(p + "self_attn.q_proj.bias").Shape);
                Assert.Equal([kvHeads * headDim], output.Get(p + "self_attn.k_proj.bias").Shape);
            }
            if (family == "qwen3") Assert.Equal([headDim], output.Get(p + "self_attn.q_norm.weight").Shape);
        }

        // The kept weights are the masked model's, in order: the removed slices were exactly the masked ones.
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "shears-report.json")));
        var layers = report.RootElement.GetProperty("removal").GetProperty("layers").EnumerateArray().ToArray();
        Assert.Equal(Small.Layers, layers.Length);
        foreach (var layer in layers)
        {
            int l = layer.GetProperty("layer").GetInt32();
            string tensor = pattern == "neurons" ? $"model.layers.{l}.mlp.gate_proj.weight" : $"model.layers.{l}.self_attn.q_proj.weight";
            var removedUnits = layer.GetProperty(pattern == "neurons" ? "neurons" : "heads").EnumerateArray().Select(e => e.GetInt32()).ToHashSet();
            int rowsPerUnit = pattern == "neurons" ? 1 : headDim;
            var before = Weights(dir.Sub("masked"), tensor);
            var after = Weights(dir.Sub("removed"), tensor);
            var kept = Enumerable.Range(0, before.Length / hidden).Where(r => !removedUnits.Contains(r / rowsPerUnit)).ToArray();
            Assert.Equal(kept.Length * hidden, after.Length);
            for (int k = 0; k < kept.Length; k++)
                for (int c = 0; c < hidden; c++)
                    Assert.Equal(before[kept[k] * hidden + c], after[k * hidden + c]);
            foreach (int unit in removedUnits)
                Assert.All(Enumerable.Range(unit * rowsPerUnit * hidden, rowsPerUnit * hidden), i => Assert.Equal(0f, before[i]));
        }

        // Perplexity of the smaller model from its files = the report's = the masked run's.
        double independent = Perplexity(dir.Sub("removed"), eval);
        double reported = status.Rounds[^1].Eval!.Value, maskedValue = maskedStatus.Rounds[^1].Eval!.Value;
        Assert.True(Math.Abs(independent - reported) / reported < 1e-5, $"removed model {independent}, report {reported}");
        Assert.True(Math.Abs(independent - maskedValue) / maskedValue < 1e-5, $"removed model {independent}, masked run {maskedValue}");
        Assert.True(Math.Abs(Perplexity(dir.Sub("masked"), eval) - independent) / independent < 1e-5);

        // Smaller files, an index that adds up, and a model that a further run takes as --model.
        var size = report.RootElement.GetProperty("size");
        Assert.True(size.GetProperty("outputBytes").GetInt64() < size.GetProperty("inputBytes").GetInt64());
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "model.safetensors.index.json")))!;
        Assert.Equal(output.Tensors.Sum(t => t.ByteLength), (long)index["metadata"]!["total_size"]!);
        var again = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = dir.Sub("removed"), OutputPath = dir.Sub("again"), Sparsity = 0.3, EvalData = eval });
        Assert.True(again.State == RunState.Completed, again.Error);
        Assert.True(Math.Abs(again.Baseline!.Value - independent) / independent < 1e-5);
    }

    /// <summary>ShortGPT's block influence of every layer on the calibration sequences, from the input checkpoint by the model's own layers.</summary>
    private static double[] BlockInfluence(string checkpoint, string calibration)
    {
        using var model = LlamaModel.Load(checkpoint, torch.CPU);
        using var scope = torch.NewDisposeScope();
        var ids = EvalData.LoadTokenIds(calibration, 128);
        var x = model.Embedding.Forward(torch.tensor(ids.SelectMany(s => s).ToArray(), [ids.Count, ids[0].Length]));
        var influence = new double[model.Layers.Count];
        for (int l = 0; l < influence.Length; l++)
        {
            var next = model.Layers[l].Forward(x);
            influence[l] = 1 - torch.nn.functional.cosine_similarity(x.to(torch.float64), next.to(torch.float64), dim: -1).mean().item<double>();
            x = next;
        }
        return influence;
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public async Task TheLayerOfLeastBlockInfluenceLeavesTheModelAndTheOthersAreRenumbered(string family)
    {
        using var dir = new TempDir();
        var options = Family(family, Small with { Layers = 4 });
        DemoCheckpoint.Write(dir.Sub("in"), options);
        string eval = QuantizeTests.TokenFile(dir.Path, 6, 20, 5);
        string calibration = QuantizeTests.TokenFile(dir.Path, 8, 24, 7);
        var masked = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("masked"), Sparsity = 0.25, Pattern = "layers", Calibration = calibration, EvalData = eval };
        var maskedStatus = await Runs.RunToEndAsync(fixture.Cluster.Client, masked);
        Assert.True(maskedStatus.State == RunState.Completed, maskedStatus.Error);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, masked with { OutputPath = dir.Sub("removed"), Remove = true });
        Assert.True(status.State == RunState.Completed, status.Error);

        var influence = BlockInfluence(dir.Sub("in"), calibration);
        int gone = Enumerable.Range(0, 4).OrderBy(l => influence[l]).First();
        // The report gives each layer's influence as the run measured it (from the stages' own activations).
        var measured = status.Rounds[0].BlockInfluence!;
        for (int l = 0; l < 4; l++) Assert.True(Math.Abs(measured[l] - influence[l]) <= 1e-4 * influence[l] + 1e-9, $"layer {l}: {measured[l]} vs {influence[l]}");
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "shears-report.json")));
        var layers = report.RootElement.GetProperty("removal").GetProperty("layers").EnumerateArray().ToArray();
        Assert.Equal([gone], layers.Where(l => l.GetProperty("removed").GetBoolean()).Select(l => l.GetProperty("layer").GetInt32()));
        Assert.Equal(3, LlamaConfig.Load(dir.Sub("removed")).NumHiddenLayers);
        if (family == "qwen2")
        {
            // The layers below max_window_layers (2) attend fully; the kept ones keep their kind of attention.
            Assert.Equal(gone < 2 ? 1 : 2, (int)JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "config.json")))!["max_window_layers"]!);
            var kept = Enumerable.Range(0, 4).Where(l => l != gone).ToArray();
            var removedConfig = LlamaConfig.Load(dir.Sub("removed"));
            for (int j = 0; j < 3; j++) Assert.Equal(kept[j] >= 2 ? 6 : null, removedConfig.WindowOf(j));
        }

        // Layer j of the output is layer j (or j + 1 past the removed one) of the input, every tensor byte for byte.
        var input = CheckpointReader.ReadManifest(dir.Sub("in"));
        var output = CheckpointReader.ReadManifest(dir.Sub("removed"));
        Assert.Equal(input.Tensors.Count - input.Tensors.Count(t => t.Name.StartsWith($"model.layers.{gone}.", StringComparison.Ordinal)), output.Tensors.Count);
        foreach (var t in output.Tensors)
        {
            string source = t.Name;
            if (t.Name.StartsWith("model.layers.", StringComparison.Ordinal))
            {
                int j = int.Parse(t.Name.Split('.')[2]);
                source = $"model.layers.{(j >= gone ? j + 1 : j)}.{string.Join('.', t.Name.Split('.')[3..])}";
            }
            Assert.Equal(CheckpointReader.ReadTensor(input, input.Get(source)), CheckpointReader.ReadTensor(output, t));
        }
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "model.safetensors.index.json")))!["weight_map"]!.AsObject();
        Assert.Equal(output.Tensors.Select(t => t.Name).Order(), index.Select(kv => kv.Key).Order());

        // The masked model bypasses the layer exactly: the smaller model's perplexity is the masked run's and the report's.
        double independent = Perplexity(dir.Sub("removed"), eval);
        Assert.True(Math.Abs(independent - status.Rounds[^1].Eval!.Value) / independent < 1e-5);
        Assert.True(Math.Abs(independent - maskedStatus.Rounds[^1].Eval!.Value) / independent < 1e-5);
        Assert.True(Math.Abs(Perplexity(dir.Sub("masked"), eval) - independent) / independent < 1e-5);
        Assert.NotEqual(maskedStatus.Baseline!.Value, independent);
    }

    [Theory]
    [InlineData("neurons", "global", 0.25, "--scope layer")]
    [InlineData("neurons", "layer", 0.999, "intermediate_size would be 0")]
    [InlineData("heads", "layer", 0.75, "query heads of each key/value group")]
    [InlineData("rows", "layer", 0.25, "--pattern neurons, heads or layers")]
    [InlineData("layers", "global", 0.9, "num_hidden_layers would be 0")]
    public async Task RemovalsTheConfigCannotHoldAreRefusedBeforeTheRun(string pattern, string scope, double sparsity, string expected)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = sparsity, Pattern = pattern, Scope = scope, Remove = true,
            Calibration = pattern == "layers" ? QuantizeTests.TokenFile(dir.Path, 2, 8, 3) : null,
        };
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(spec));
        Assert.Contains(expected, e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }
}
