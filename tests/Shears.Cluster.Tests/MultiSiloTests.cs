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
    // --shards N cuts across tensors and layers: the masks are still the reference's, and the report holds N shards.
    [InlineData("global", 0L, 7)]
    [InlineData("layer", 0L, 23)]
    public async Task ThreeSilosWriteTheSameMasksAsTheReference(string scope, long shardElements, int? exactShards = null)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.37, Scope = scope, Shards = exactShards };
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, exactShards is null ? spec with { ShardElements = shardElements } : spec);
        Assert.True(status.State == RunState.Completed, status.Error);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), ReferencePruner.Masks(manifest, 0.37, scope == "global"));

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var silos = report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().ToArray();
        var shards = report.RootElement.GetProperty("shards").GetArrayLength();
        Assert.Equal(Math.Min(3, shards), silos.Length); // shards spread over every silo
        if (exactShards is not null) Assert.Equal(exactShards, shards);
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

    /// <summary>
    /// Shards read the checkpoint through maps of its files: one rewritten during a run must fail the run naming the file,
    /// not give an output made of two checkpoints' weights (and the output must not appear).
    /// </summary>
    [Fact]
    public async Task ACheckpointChangedMidRunFailsTheRunNamingTheFile()
    {
        using var dir = new TempDir();
        var spec = Runs.ManyRounds(dir);
        var files = Directory.GetFiles(dir.Sub("in"), "*.safetensors");
        bool touched = false;
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, spec("out"), watch: status =>
        {
            if (!touched && status.Round >= 2)
            {
                touched = true;
                // What an in-place rewrite does to the file's metadata (the bytes may even be the same).
                foreach (string file in files) File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(5));
            }
            return Task.CompletedTask;
        });
        Assert.True(touched, "the run ended before the checkpoint could be changed");
        Assert.Equal(RunState.Failed, status.State);
        Assert.Contains("changed while the run was reading it", status.Error);
        Assert.Contains(files, f => status.Error!.Contains(f));
        Assert.False(Directory.Exists(dir.Sub("out")));
    }

    /// <summary>A shard's error reaches the coordinator on another silo with its message (it was "Could not find a codec").</summary>
    [Fact]
    public async Task ANaNOnAnotherSiloIsNamed()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), TensorDType.F32);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        // In every prunable tensor, so that shards on every silo find one.
        foreach (var t in manifest.Tensors.Where(ReferencePruner.DefaultPrunable))
        {
            using var file = File.OpenWrite(Path.Combine(dir.Sub("in"), t.FileName));
            file.Position = t.FileOffset + 4 * 5;
            file.Write(BitConverter.GetBytes(float.NaN));
        }
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, ShardElements = 400,
        });
        Assert.Equal(RunState.Failed, status.State);
        Assert.Contains("NaN", status.Error);
        Assert.Contains("model.layers.", status.Error);
        Assert.DoesNotContain("codec", status.Error);
        Assert.False(Directory.Exists(dir.Sub("out")));
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

    /// <summary>
    /// Starting a run again with the same options (a client retrying; the lists are new copies, equal by content) answers
    /// with the run; other options under the same run id are refused.
    /// </summary>
    [Fact]
    public async Task TheSameSpecAgainFindsTheRunAnotherIsRefused()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        RunSpec Spec(double sparsity) => new()
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = sparsity, Include = ["model.layers.*"], Exclude = ["*.o_proj.weight"],
        };
        string runId = Guid.NewGuid().ToString("N");
        var end = await Runs.RunToEndAsync(fixture.Cluster.Client, Spec(0.5), runId);
        Assert.True(end.State == RunState.Completed, end.Error);
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(runId);
        var again = await grain.StartAsync(Spec(0.5));
        Assert.Equal((RunState.Completed, end.StartedAt), (again.State, again.StartedAt));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(Spec(0.6)));
        Assert.Contains("already taken", e.Message);
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

    /// <summary>
    /// Global head ranking: every head of every layer against every other, decided once by the coordinator from the
    /// shards' scores; the output equals the library's global selection applied to the input, and the layers end with
    /// different numbers of heads (a layer-wise run would give each the same share).
    /// </summary>
    [Fact]
    public async Task GlobalHeadRankingPrunesTheLowestHeadsOfTheWholeModel()
    {
        using var dir = new TempDir();
        var options = new DemoCheckpointOptions(HiddenSize: 64, Layers: 4, Heads: 8, KvHeads: 4, IntermediateSize: 96, VocabSize: 64) with { DType = TensorDType.F32 };
        DemoCheckpoint.Write(dir.Sub("in"), options);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Scope = RunOptions.Scopes.Global,
            Pattern = RunOptions.Patterns.Heads, Schedule = RunOptions.Schedules.Linear, Rounds = 2,
        });
        Assert.True(status.State == RunState.Completed, status.Error);

        var input = CheckpointReader.ReadManifest(dir.Sub("in"));
        var output = CheckpointReader.ReadManifest(dir.Sub("out"));
        string Name(int layer, string proj) => $"model.layers.{layer}.self_attn.{proj}.weight";
        Shears.Pruning.Heads.HeadWeights Weights(int l) => new(
            CheckpointReader.ReadTensor(input, input.Get(Name(l, "q_proj"))), CheckpointReader.ReadTensor(input, input.Get(Name(l, "k_proj"))),
            CheckpointReader.ReadTensor(input, input.Get(Name(l, "v_proj"))), CheckpointReader.ReadTensor(input, input.Get(Name(l, "o_proj"))),
            TensorDType.F32, 64, 8, 4, 8);
        var scores = Enumerable.Range(0, 4).Select(l => Shears.Pruning.Heads.HeadPruning.Scores(Weights(l), Shears.Pruning.Heads.HeadScore.QueryL1)).ToArray();
        // Linear schedule: round 1 takes the lowest 8 of 32, round 2 the next 8; with unchanged weights that is the lowest 16.
        var chosen = Shears.Pruning.Heads.HeadPruning.SelectHeadsGlobal(scores, 0.5, []);
        Assert.Equal(16, chosen.Length);
        var perLayer = Enumerable.Range(0, 4).Select(l => chosen.Where(c => c.Layer == l).Select(c => c.Head).ToArray()).ToArray();
        Assert.NotEqual(1, perLayer.Select(h => h.Length).Distinct().Count());
        for (int l = 0; l < 4; l++)
        {
            var masks = Shears.Pruning.Heads.HeadPruning.MaskHeads(Weights(l), perLayer[l]);
            foreach (var (proj, mask) in new[] { ("q_proj", masks.Q), ("k_proj", masks.K), ("v_proj", masks.V), ("o_proj", masks.O) })
            {
                var before = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(input, input.Get(Name(l, proj)))).ToArray();
                var after = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(output, output.Get(Name(l, proj)))).ToArray();
                for (int i = 0; i < after.Length; i++)
                    Assert.True(mask[i] ? BitConverter.SingleToUInt32Bits(after[i]) == 0 : after[i].Equals(before[i]), $"layer {l} {proj}[{i}]");
            }
        }
    }
}
