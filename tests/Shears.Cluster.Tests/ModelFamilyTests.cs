using System.Text.Json.Nodes;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// Model families whose forward pass differs from LLaMA's: computed where Shears knows them (Qwen3's query/key norms,
/// Qwen2's and Mistral's sliding windows), refused before the run where it does not, never computed wrongly.
/// </summary>
[Collection(ClusterCollection.Name)]
public class ModelFamilyTests(ClusterFixture fixture)
{
    private static void EditConfig(string checkpoint, Action<JsonObject> edit)
    {
        string path = Path.Combine(checkpoint, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    [Theory]
    [InlineData("qwen3")]
    [InlineData("qwen2")]
    [InlineData("mistral")]
    public async Task ThePipelinesPerplexityIsTheInProcessModelsAndTheWindowOrNormsChangeIt(string family)
    {
        using var dir = new TempDir();
        var options = family == "mistral"
            ? QuantizeTests.Small with { ModelType = "mistral", SlidingWindow = 5 }
            : RemoveTests.Family(family, QuantizeTests.Small);
        DemoCheckpoint.Write(dir.Sub("in"), options);
        string eval = QuantizeTests.TokenFile(dir.Path, 6, 20, 5);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client,
            new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.3, EvalData = eval });
        Assert.True(status.State == RunState.Completed, status.Error);

        double Perplexity(string checkpoint) => RemoveTests.Perplexity(checkpoint, eval);
        double dense = Perplexity(dir.Sub("in"));
        Assert.True(Math.Abs(status.Baseline!.Value - dense) / dense < 1e-5, $"pipeline {status.Baseline.Value}, in process {dense}");
        double pruned = Perplexity(dir.Sub("out"));
        Assert.True(Math.Abs(status.Rounds[^1].Eval!.Value - pruned) / pruned < 1e-5, $"pipeline {status.Rounds[^1].Eval!.Value}, in process {pruned}");

        // The window is computed: the same weights read with full attention give another perplexity. (That the query/key
        // norms are computed is shown against the naive layer in LlamaDecoderLayerTests.)
        if (family == "qwen3") return;
        EditConfig(dir.Sub("in"), json =>
        {
            json["use_sliding_window"] = false;
            json["sliding_window"] = null;
        });
        Assert.NotEqual(dense, Perplexity(dir.Sub("in")));
    }

    [Fact]
    public async Task AFamilyShearsDoesNotComputeIsRefusedForEvaluationButPrunedByMagnitude()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), QuantizeTests.Small);
        EditConfig(dir.Sub("in"), json => json["model_type"] = "granite");
        string eval = QuantizeTests.TokenFile(dir.Path, 2, 8, 3);
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() =>
            grain.StartAsync(new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, EvalData = eval }));
        Assert.Contains("model_type", e.Message);
        Assert.Contains("granite", e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));

        // Magnitude pruning needs no forward pass: it works on the same checkpoint.
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client,
            new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("magnitude"), Sparsity = 0.5 });
        Assert.True(status.State == RunState.Completed, status.Error);
    }

    [Fact]
    public async Task ALayerTensorTheModelTypeDoesNotComputeIsRefusedNamingIt()
    {
        // A Qwen3 checkpoint whose config says llama: its q_norm/k_norm would be ignored, so the run is refused.
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), RemoveTests.Family("qwen3", QuantizeTests.Small));
        EditConfig(dir.Sub("in"), json => json["model_type"] = "llama");
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Method = "wanda", Scope = "layer",
            Calibration = QuantizeTests.TokenFile(dir.Path, 2, 8, 3),
        }));
        Assert.Matches(@"tensor .model\.layers\.0\.self_attn\.[qk]_norm\.weight. is not part of a llama decoder layer", e.Message);
        Assert.Contains("llama", e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }
}
