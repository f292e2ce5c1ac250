using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

[Collection(ClusterCollection.Name)]
public class MultiSiloTests(ClusterFixture fixture)
{
    [Theory]
    [InlineData("global", 400L)]
    [InlineData("global", 100_000L)]
    [InlineData("layer", 500L)]
    public async Task ThreeSilosWriteTheSameMasksAsTheReference(string scope, long shardElements)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.37, Scope = scope, ShardElements = shardElements,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), ReferencePruner.Masks(manifest, 0.37, scope == "global"));

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var silos = report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().ToArray();
        var shards = report.RootElement.GetProperty("shards").GetArrayLength();
        Assert.Equal(Math.Min(3, shards), silos.Length); // shards spread over every silo
    }

    [Theory]
    [InlineData("BF16", "extreme")]
    [InlineData("F32", "extreme")]
    [InlineData("BF16", "equal")]
    [InlineData("F32", "equal")]
    public async Task SpecialValuesSelectExactlyAcrossSilos(string dtype, string levels)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), Enum.Parse<TensorDType>(dtype), levels: levels == "equal" ? TieHeavyCheckpoint.AllEqual : TieHeavyCheckpoint.ExtremeLevels);
        foreach (double sparsity in new[] { 0.0, 0.37, 0.5, 1.0 })
        {
            string output = dir.Sub($"out-{sparsity}");
            var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
            {
                ModelPath = dir.Sub("in"), OutputPath = output, Sparsity = sparsity, ShardElements = 700,
            });
            Assert.True(status.State == RunState.Completed, status.Error);
            var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
            ReferencePruner.AssertOutput(dir.Sub("in"), output, ReferencePruner.Masks(manifest, sparsity, global: true));
        }
    }

    [Fact]
    public async Task ShardsSpreadEvenly()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, ShardElements = 300,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var perSilo = report.RootElement.GetProperty("shards").EnumerateArray().GroupBy(s => s.GetProperty("silo").GetString()).Select(g => g.Count()).ToArray();
        Assert.Equal(3, perSilo.Length);
        Assert.True(perSilo.Max() - perSilo.Min() <= 1, string.Join(",", perSilo));
    }

    [Fact]
    public async Task BadInputIsRejectedBeforeTheRunStarts()
    {
        using var dir = new TempDir();
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec
        {
            ModelPath = dir.Sub("missing"), OutputPath = dir.Sub("out"), Sparsity = 0.5,
        }));
        Assert.Contains(dir.Sub("missing"), e.Message);
    }
}

/// <summary>Progressive per-layer allocation through the grains: the per-tensor counts the allocation defines, exactly.</summary>
[Collection(ClusterCollection.Name)]
public class ProgressiveScopeTests(ClusterFixture fixture)
{
    [Fact]
    public async Task EachTensorGetsTheCountTheAllocationGivesIt()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), TensorDType.F32, levels: [0.001f, 0.01f, 0.1f, 0.3f, -0.2f, 1f]);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.4, Scope = RunOptions.Scopes.Progressive, ShardElements = 500,
        });
        Assert.True(status.State == RunState.Completed, status.Error);

        // Independently: mean |w| per prunable tensor, the allocation, then each tensor's smallest |w| (ties by index).
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        var prunable = manifest.Tensors.Where(ReferencePruner.DefaultPrunable).ToArray();
        var data = prunable.Select(t => CheckpointReader.ReadTensor(manifest, t)).ToArray();
        var importance = prunable.Select((t, i) => Enumerable.Range(0, (int)t.ElementCount).Sum(e => (double)ReferencePruner.Magnitude(data[i], t.DType, e)) / t.ElementCount).ToArray();
        var counts = Shears.Pruning.Allocation.ProgressiveAllocation.Allocate(prunable.Select(t => t.ElementCount).ToArray(), importance, 0.4).Counts;
        Assert.Equal((long)Math.Round(0.4 * prunable.Sum(t => t.ElementCount), MidpointRounding.ToEven), counts.Sum());
        Assert.True(counts.Distinct().Count() > 1, "the allocation should differ between tensors");

        var masks = new Dictionary<string, bool[]>();
        for (int i = 0; i < prunable.Length; i++)
        {
            var order = Enumerable.Range(0, (int)prunable[i].ElementCount)
                .OrderBy(e => ReferencePruner.Magnitude(data[i], prunable[i].DType, e)).ThenBy(e => e).Take((int)counts[i]).ToHashSet();
            masks[prunable[i].Name] = Enumerable.Range(0, (int)prunable[i].ElementCount).Select(order.Contains).ToArray();
        }
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), masks);
    }
}
