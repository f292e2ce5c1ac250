using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>A silo with --data-root refuses what lies outside it, by real location, before the run starts.</summary>
public class DataRootTests
{
    [Fact]
    public async Task PathsLeadingOutOfTheRootsAreRefusedNamingTheOption()
    {
        using var dir = new TempDir();
        string root = dir.Sub("root"), outside = dir.Sub("outside");
        DemoCheckpoint.Write(Path.Combine(root, "model"), new DemoCheckpointOptions(HiddenSize: 16, Layers: 1, Heads: 2, KvHeads: 1, IntermediateSize: 24, VocabSize: 32));
        DemoCheckpoint.Write(Path.Combine(outside, "model"), new DemoCheckpointOptions(HiddenSize: 16, Layers: 1, Heads: 2, KvHeads: 1, IntermediateSize: 24, VocabSize: 32));
        File.CreateSymbolicLink(Path.Combine(root, "elsewhere"), outside);
        File.WriteAllText(Path.Combine(outside, "eval.json"), "[[1, 2, 3, 4]]");
        var cluster = ClusterFixture.Build(1, configure: silo => silo.Configure<Shears.Grains.ShearsOptions>(o => o.DataRoots.Add(root)));
        await cluster.DeployAsync();
        await using var _ = cluster;
        RunSpec Spec(string model, string output, string? eval = null) => new() { ModelPath = model, OutputPath = output, Sparsity = 0.5, EvalData = eval };

        var inside = await Runs.RunToEndAsync(cluster.Client, Spec(Path.Combine(root, "model"), Path.Combine(root, "out")));
        Assert.True(inside.State == RunState.Completed, inside.Error);
        foreach (var (spec, option) in new[]
        {
            (Spec(Path.Combine(root, "elsewhere", "model"), Path.Combine(root, "out2")), "--model"),
            (Spec(Path.Combine(root, "..", "outside", "model"), Path.Combine(root, "out3")), "--model"),
            (Spec(Path.Combine(root, "model"), Path.Combine(root, "elsewhere", "out")), "--out"),
            (Spec(Path.Combine(root, "model"), Path.Combine(root, "out4"), Path.Combine(root, "elsewhere", "eval.json")), "--eval"),
        })
        {
            var e = await Assert.ThrowsAsync<RunRejectedException>(() => cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N")).StartAsync(spec));
            Assert.StartsWith(option + " ", e.Message);
            Assert.Contains("outside the silo's data roots", e.Message);
        }
        Assert.False(Directory.Exists(Path.Combine(outside, "out")));
    }
}
