using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// --synthetic-weights: shards score weights generated from the seed, not the file's bytes; a run of it selects exactly
/// what a run on a file holding those very weights selects, and writes only its report.
/// </summary>
public class SyntheticWeightsRunTests
{
    private static readonly DemoCheckpointOptions Model = new(HiddenSize: 64, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128, DType: TensorDType.BF16);

    [Fact]
    public async Task A_synthetic_run_selects_what_a_run_on_the_generated_weights_selects_and_writes_only_its_report()
    {
        var cluster = ClusterFixture.Build(3);
        await cluster.DeployAsync();
        await using var _ = cluster;
        using var dir = new TempDir();
        const long seed = 41;
        // The demo checkpoint's own weights are never read by the synthetic run; a copy gets the generated ones in place.
        DemoCheckpoint.Write(dir.Sub("shapes"), Model);
        CopyDirectory(dir.Sub("shapes"), dir.Sub("generated"));
        var manifest = CheckpointReader.ReadManifest(dir.Sub("generated"));
        foreach (var t in manifest.Tensors)
        {
            var bytes = new byte[t.ByteLength];
            SyntheticWeights.Bytes(seed, t.Name, 0, bytes);
            using var file = File.OpenHandle(manifest.PathOf(t.FileName), FileMode.Open, FileAccess.Write);
            RandomAccess.Write(file, bytes, t.FileOffset);
        }

        foreach (string scope in new[] { RunOptions.Scopes.Global, RunOptions.Scopes.Layer })
        {
            RunSpec Spec(string model, string output, long? synthetic) => new()
            {
                ModelPath = dir.Sub(model), OutputPath = dir.Sub(output), Sparsity = 0.37, Scope = scope, ShardElements = 3000,
                SyntheticWeights = synthetic, Schedule = RunOptions.Schedules.Linear, Rounds = 2,
            };
            var real = await Runs.RunToEndAsync(cluster.Client, Spec("generated", $"real-{scope}", null));
            Assert.True(real.State == RunState.Completed, real.Error);
            var synthetic = await Runs.RunToEndAsync(cluster.Client, Spec("shapes", $"synthetic-{scope}", seed));
            Assert.True(synthetic.State == RunState.Completed, synthetic.Error);

            Assert.Equal("shears-report.json", Path.GetFileName(Assert.Single(Directory.GetFileSystemEntries(dir.Sub($"synthetic-{scope}")))));
            using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub($"real-{scope}"), "shears-report.json")));
            using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub($"synthetic-{scope}"), "shears-report.json")));
            string Tensors(JsonDocument d) => string.Join(";", d.RootElement.GetProperty("tensors").EnumerateArray().Select(t => $"{t.GetProperty("name")}={t.GetProperty("maskedWeights")}"));
            string Rounds(JsonDocument d) => string.Join(";", d.RootElement.GetProperty("rounds").EnumerateArray().Select(r => $"{r.GetProperty("maskedWeights")}@{(r.TryGetProperty("threshold", out var t) ? t.ToString() : "-")}"));
            Assert.Equal(Tensors(a), Tensors(b));
            Assert.Equal(Rounds(a), Rounds(b));
            Assert.True(b.RootElement.GetProperty("shards").GetArrayLength() > 3);
            // The synthetic run differs from one that read the demo checkpoint's own weights (with --scope layer every tensor
            // loses the same count whatever its weights: only the global split tells them apart).
            if (scope != RunOptions.Scopes.Global) continue;
            var own = await Runs.RunToEndAsync(cluster.Client, Spec("shapes", $"own-{scope}", null));
            using var c = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub($"own-{scope}"), "shears-report.json")));
            Assert.NotEqual(Tensors(c), Tensors(b));
        }
    }

    [Fact]
    public void Synthetic_weights_refuse_what_needs_a_real_model()
    {
        var spec = new RunSpec { ModelPath = "/m", OutputPath = "/o", Sparsity = 0.5, SyntheticWeights = 1 };
        Assert.Empty(RunOptions.Validate(spec));
        Assert.Contains(RunOptions.Validate(spec with { Method = RunOptions.Methods.Random }), e => e.Contains("--synthetic-weights works with --method magnitude"));
        Assert.Contains(RunOptions.Validate(spec with { Scope = RunOptions.Scopes.Progressive }), e => e.Contains("--synthetic-weights works with"));
        Assert.Contains(RunOptions.Validate(spec with { FinetuneSteps = 2 }), e => e.Contains("--synthetic-weights has no model"));
        Assert.Contains(RunOptions.Validate(spec with { Quantize = "W8A16" }), e => e.Contains("--synthetic-weights has no model"));
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
