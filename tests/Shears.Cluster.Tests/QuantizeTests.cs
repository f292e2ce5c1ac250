using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>--quantize over three silos: the pack-quantized output read back by a dequantizer written here from the format.</summary>
[Collection(ClusterCollection.Name)]
public class QuantizeTests(ClusterFixture fixture)
{
    // Two of the MLP's widths are not multiples of the group: the last group of a row is short.
    internal static readonly DemoCheckpointOptions Small = new(HiddenSize: 64, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 88, VocabSize: 128, MaxShardBytes: 60_000);

    internal static string TokenFile(string dir, int sequences, int length, int seed)
    {
        var random = new Random(seed);
        var data = Enumerable.Range(0, sequences).Select(_ => Enumerable.Range(0, length).Select(_ => (long)random.Next(Small.VocabSize)).ToArray()).ToArray();
        string path = Path.Combine(dir, $"tokens-{seed}.json");
        File.WriteAllText(path, JsonSerializer.Serialize(data));
        return path;
    }

    internal static float[] Weights(string checkpoint, string name)
    {
        var m = CheckpointReader.ReadManifest(checkpoint);
        var t = m.Get(name);
        return Shears.Pruning.Quantization.QuantizedRows.Widen(CheckpointReader.ReadTensor(m, t), t.DType, t.ElementCount, name);
    }

    [Theory]
    [InlineData("W4A16", 16)]
    [InlineData("W4A16_ASYM", 32)]
    [InlineData("W8A16", 128)]
    public async Task PackQuantizedOutputDequantizesToThePrunedWeightsAndItsPerplexityIsTheReports(string scheme, int groupSize)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string eval = TokenFile(dir.Path, 6, 20, 5);
        var pruned = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("pruned"), Sparsity = 0.5 };
        Assert.Equal(RunState.Completed, (await Runs.RunToEndAsync(fixture.Cluster.Client, pruned)).State);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, pruned with
        {
            OutputPath = dir.Sub("out"), EvalData = eval, Quantize = scheme, GroupSize = groupSize == 128 ? 128 : groupSize,
        });
        Assert.True(status.State == RunState.Completed, status.Error);

        var dense = PackQuantized.Dequantize(dir.Sub("out"), dir.Sub("dense"));
        Assert.Equal(3 * 7, dense.Count);
        foreach (var (name, values) in dense)
        {
            var original = Weights(dir.Sub("pruned"), name);
            int zeros = 0;
            for (int i = 0; i < values.Length; i++)
            {
                if (original[i] == 0) { Assert.Equal(0f, values[i]); zeros++; }
                Assert.True(Math.Abs(values[i] - original[i]) < 0.2, $"{name}[{i}]: {values[i]} vs {original[i]}");
            }
            Assert.True(zeros >= values.Length / 4, $"{name}: {zeros} zeros");
        }
        using var model = LlamaModel.Load(dir.Sub("dense"), torch.CPU);
        double independent = Perplexity.Evaluate(model, EvalData.LoadTokenIds(eval, 128), 4, torch.CPU).Value;
        Assert.True(Math.Abs(status.Rounds[^1].Eval!.Value - independent) / independent < 1e-4, $"report {status.Rounds[^1].Eval!.Value} vs {independent}");

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var q = report.RootElement.GetProperty("quantization");
        Assert.Equal(scheme, q.GetProperty("scheme").GetString());
        Assert.Equal(21, q.GetProperty("tensors").GetArrayLength());
        Assert.True(q.GetProperty("maxAbsError").GetDouble() > 0);
        var size = report.RootElement.GetProperty("size");
        Assert.True(size.GetProperty("outputBytes").GetInt64() < size.GetProperty("inputBytes").GetInt64());
        // Every masked weight dequantizes to 0, and a few more round to their group's zero point.
        Assert.InRange(size.GetProperty("prunableZeroFraction").GetDouble(), 0.5, 0.75);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "config.json")))!["quantization_config"]!;
        Assert.Equal("pack-quantized", (string)config["format"]!);
        Assert.Equal("compressed", (string)config["quantization_status"]!);
        Assert.Contains("lm_head", config["ignore"]!.AsArray().Select(n => (string)n!));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "model.safetensors.index.json")))!["weight_map"]!.AsObject();
        Assert.Contains("model.layers.0.mlp.up_proj.weight_packed", index.Select(kv => kv.Key));
        Assert.DoesNotContain("model.layers.0.mlp.up_proj.weight", index.Select(kv => kv.Key));
    }

    [Fact]
    public async Task RowBlocksOnManyShardsWriteTheSameBytesAsOneShardPerLayer()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var whole = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("whole"), Sparsity = 0.3, Quantize = "W4A16_ASYM", GroupSize = 16 };
        Assert.Equal(RunState.Completed, (await Runs.RunToEndAsync(fixture.Cluster.Client, whole)).State);
        // 900 elements: row blocks of 8 rows (zero-point words never shared), several per tensor, on all three silos.
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, whole with { OutputPath = dir.Sub("split"), ShardElements = 900 });
        Assert.True(status.State == RunState.Completed, status.Error);
        foreach (var file in Directory.GetFiles(dir.Sub("whole")).Select(Path.GetFileName).Where(f => f != "shears-report.json"))
            Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("whole"), file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("split"), file!))), file);
    }

    [Theory]
    [InlineData("W8A8", "--quantize W8A8")]
    [InlineData("W4A16 again", "already quantized")]
    public async Task SchemesThatDoNotFitTheModelAreRefusedBeforeTheRun(string scheme, string expected)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string model = dir.Sub("in");
        if (scheme == "W4A16 again")
        {
            var first = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = model, OutputPath = dir.Sub("q"), Sparsity = 0, Quantize = "W4A16", GroupSize = 16 });
            Assert.True(first.State == RunState.Completed, first.Error);
            model = dir.Sub("q");
            scheme = "W4A16";
        }
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec { ModelPath = model, OutputPath = dir.Sub("out"), Sparsity = 0.5, Quantize = scheme, GroupSize = scheme == "W8A8" ? 128 : 16 }));
        Assert.Contains(expected, e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")) && Directory.EnumerateFileSystemEntries(dir.Sub("out")).Any());
    }
}
