using System.Text.Json;
using Shears.Contracts;
using Shears.Grains.Placement;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>Shards placed within the silos' --memory-budget, and runs that cannot fit refused before they start.</summary>
public class MemoryBudgetTests
{
    [Fact]
    public void Shards_go_largest_first_to_the_silo_with_the_most_budget_left()
    {
        // 5 → a (a tie goes to the first), 3 → b (6 left against 1), 3 → b (3), 1 → a (1 against 0).
        Assert.Equal([0, 1, 1, 0], BudgetPlacement.Assign([5, 3, 3, 1], [("a", 6), ("b", 6)], i => $"t{i}"));
        // By free budget, not in turn: a silo with twice the budget takes twice the equal shards.
        var spread = BudgetPlacement.Assign(Enumerable.Repeat(1L, 6).ToArray(), [("a", 4), ("b", 2)], i => $"t{i}");
        Assert.Equal((4, 2), (spread.Count(s => s == 0), spread.Count(s => s == 1)));

        var e = Assert.Throws<RunRejectedException>(() => BudgetPlacement.Assign([2, 7], [("a", 6), ("b", 5)], i => $"'t{i}'"));
        Assert.Contains("shard 1 ('t1') needs about 0.0 MiB (7 bytes)", e.Message);
        Assert.Contains("largest free memory budget, 0.0 MiB (6 bytes) on silo a", e.Message);
        e = Assert.Throws<RunRejectedException>(() => BudgetPlacement.Assign([4, 4, 4], [("a", 6), ("b", 6)], i => $"'t{i}'"));
        Assert.Contains("(12 bytes) in all", e.Message);
        Assert.Contains("a: 0.0 MiB (6 bytes), b: 0.0 MiB (6 bytes)", e.Message);
        // 12 bytes fit 6 + 6 in all, but not as 4 + 4 + 4: the shard left without a silo and the room there is are named.
        Assert.Contains("together they would fit, but placed largest first on the silo with the most left, shard 2 ('t2'), about 0.0 MiB (4 bytes), " +
            "finds no silo with room for it: the most left on one is 0.0 MiB (2 bytes)", e.Message);
        e = Assert.Throws<RunRejectedException>(() => BudgetPlacement.Assign([4, 4, 4], [("a", 5), ("b", 5)], i => $"'t{i}'"));
        Assert.Contains("(12 bytes) in all", e.Message);
        Assert.DoesNotContain("together they would fit", e.Message);
    }

    [Fact]
    public void Budgets_are_read_as_bytes_with_binary_suffixes_or_a_share_of_memory()
    {
        Assert.Equal(8L << 30, ShardBudgets.Parse("8G", "--memory-budget"));
        Assert.Equal(3L << 19, ShardBudgets.Parse("1.5MiB", "--memory-budget"));
        Assert.Equal(123_456, ShardBudgets.Parse(" 123456 ", "--memory-budget"));
        Assert.Equal(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2, ShardBudgets.Parse("50%", "--memory-budget"), 1.0);
        foreach (string bad in new[] { "0", "-5G", "lots", "150%", "0%", "5X" })
            Assert.Contains("--memory-budget", Assert.Throws<ArgumentException>(() => ShardBudgets.Parse(bad, "--memory-budget")).Message);
    }

    private static readonly DemoCheckpointOptions Model = new(HiddenSize: 64, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128, DType: TensorDType.F32);

    // A layer's seven matrices: 2 × 64² + 2 × 32·64 + 3 × 64·96 = 30,720 fp32 weights, 126,720 bytes with their masks.
    private const long LayerBytes = 30_720 * 4 + 30_720 / 8;

    [Fact]
    public async Task A_silo_with_more_budget_takes_more_shards_and_one_with_none_takes_none()
    {
        // Silo 0 can hold three layers, silo 1 one, silo 2 none: four one-layer shards go 3 / 1 / 0.
        var cluster = ClusterFixture.Build(3, memoryBudget: name => name.EndsWith('0') ? 3 * LayerBytes + 1000 : name.EndsWith('1') ? LayerBytes + 1000 : 1000);
        await cluster.DeployAsync();
        await using var _ = cluster;
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Model);
        var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5 };
        var status = await Runs.RunToEndAsync(cluster.Client, spec);
        Assert.True(status.State == RunState.Completed, status.Error);
        var silos = cluster.Silos.OrderBy(s => s.Name).Select(s => s.SiloAddress.ToString()).ToArray();
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var placed = report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).ToArray();
        Assert.Equal(4, placed.Length);
        Assert.Equal([3, 1, 0], silos.Select(s => placed.Count(p => p == s)));

        // Evaluation builds each layer's stage in fp32 beside its pieces: about twice a layer's bytes per stage, of which
        // only silo 0 holds one. Refused before it starts (halving the layers into attention and MLP stages would not make
        // room that is not there), naming the largest shard and the budgets.
        var refused = await Assert.ThrowsAsync<RunRejectedException>(() => cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"))
            .StartAsync(spec with { OutputPath = dir.Sub("eval"), EvalData = TokenFile(dir.Path) }));
        Assert.Contains("does not fit the cluster's memory budgets", refused.Message);
        Assert.Contains("in all (the largest, shard 1 (the stage of layer 0: 'model.layers.0.", refused.Message);
        Assert.Contains("--memory-budget", refused.Message);
        Assert.False(Directory.Exists(dir.Sub("eval")));
    }

    [Fact]
    public async Task Shards_too_large_for_every_budget_are_split_until_they_fit_and_write_the_same_output()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Model);
        var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("roomy"), Sparsity = 0.5, Scope = RunOptions.Scopes.Global };
        var roomy = ClusterFixture.Build(3);
        await roomy.DeployAsync();
        await using (roomy)
        {
            var status = await Runs.RunToEndAsync(roomy.Client, spec);
            Assert.True(status.State == RunState.Completed, status.Error);
        }
        // Three silos of 1.9 layers each: one-layer shards fill only three of them one layer each (the fourth fits
        // nowhere); half-layer shards go three to a silo.
        var tight = ClusterFixture.Build(3, memoryBudget: _ => LayerBytes * 19 / 10);
        await tight.DeployAsync();
        await using (tight)
        {
            var status = await Runs.RunToEndAsync(tight.Client, spec with { OutputPath = dir.Sub("tight") });
            Assert.True(status.State == RunState.Completed, status.Error);
            Assert.True(status.Shards > 4, $"{status.Shards} shards");
        }
        foreach (string file in Directory.GetFiles(dir.Sub("roomy")).Where(f => !f.EndsWith("shears-report.json", StringComparison.Ordinal)))
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(dir.Sub("tight"), Path.GetFileName(file))));
    }

    /// <summary>
    /// Budgets smaller than one decoder layer's stage: each layer runs as two stages, its attention and its MLP, on
    /// shards of their own, and evaluation and fine-tuning (with the hidden-state distillation term, which belongs to the
    /// layer's output, so to the MLP's stage) compute what the whole layers compute.
    /// </summary>
    [Theory]
    [InlineData(RunOptions.DistillModes.Output)]
    [InlineData(RunOptions.DistillModes.Hidden)]
    public async Task Layers_larger_than_every_budget_run_as_attention_and_mlp_stages_and_compute_the_same(string distill)
    {
        using var dir = new TempDir();
        var model = Model with { Layers = 2 };
        DemoCheckpoint.Write(dir.Sub("in"), model);
        string train = Path.Combine(dir.Path, "train.json");
        File.WriteAllText(train, "[[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3], [2, 3, 8, 4, 6, 2, 6, 4], [3, 3, 8, 3, 2, 7, 9, 5]]");
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("whole"), Sparsity = 0.5, Rounds = 2, Schedule = RunOptions.Schedules.Linear,
            EvalData = TokenFile(dir.Path), FinetuneSteps = 2, FinetuneData = train, Batch = 4, LearningRate = 1e-3, Distill = distill,
        };

        // The budget: every half fits, and the halves fit the three silos together; a whole layer fits none.
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        long[] Needs(RunPlan plan) => plan.Shards.Select(s => ShardMemory.Estimate(s, plan.Stages![s.Index], manifest, spec)).ToArray();
        var wholeNeeds = Needs(RunPlanner.Plan(manifest, spec));
        var split = RunPlanner.Plan(manifest, spec, splitLayers: true);
        var splitNeeds = Needs(split);
        Assert.Equal(2 + 2 * model.Layers, split.Stages!.Count);
        Assert.Equal([StagePlan.AttentionPart, StagePlan.MlpPart, StagePlan.AttentionPart, StagePlan.MlpPart],
            split.Stages.Where(s => s.Kind == StagePlan.LayerKind).Select(s => s.Part));
        bool Fits(long[] needs, long each)
        {
            try { BudgetPlacement.Assign(needs, [("a", each), ("b", each), ("c", each)], i => $"{i}"); return true; }
            catch (RunRejectedException) { return false; }
        }
        long budget = splitNeeds.Max();
        while (!Fits(splitNeeds, budget)) budget += budget / 100;
        Assert.True(budget < wholeNeeds[1], $"budget {budget}, a layer's stage {wholeNeeds[1]}");
        Assert.False(Fits(wholeNeeds, budget));

        var (whole, halves) = await WholeThenHalvesAsync(spec, dir.Sub("halves"), 3, budget, model.Layers);
        Assert.Equal(2 + model.Layers, whole.Shards);
        foreach (var (a, b) in whole.Rounds.Zip(halves.Rounds))
        {
            Assert.Equal(a.Eval!.Value, b.Eval!.Value, 1e-6 * a.Eval.Value);
            Assert.Equal(a.FinetuneLoss!.Value, b.FinetuneLoss!.Value, 1e-6 * a.FinetuneLoss.Value);
        }
        // The same masks, and the same trained weights to float rounding.
        var left = CheckpointReader.ReadManifest(dir.Sub("whole"));
        var right = CheckpointReader.ReadManifest(dir.Sub("halves"));
        foreach (var t in left.Tensors)
        {
            var x = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(left, t)).ToArray();
            var y = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(right, right.Get(t.Name))).ToArray();
            for (int i = 0; i < x.Length; i++)
            {
                Assert.Equal(x[i] == 0, y[i] == 0);
                Assert.True(Math.Abs(x[i] - y[i]) <= 1e-5f * (1 + Math.Abs(x[i])), $"{t.Name}[{i}]: {x[i]} against {y[i]}");
            }
        }
    }

    /// <summary>
    /// The halves with what runs after the rounds: heads removed (--remove) and the smaller model quantized (W4A16 RTN),
    /// the last evaluation on the dequantized weights. Nothing trains, so the output is byte for byte the whole-layer run's.
    /// </summary>
    [Fact]
    public async Task Layer_halves_remove_and_quantize_write_the_bytes_whole_layers_write()
    {
        using var dir = new TempDir();
        var model = Model with { Layers = 2 };
        DemoCheckpoint.Write(dir.Sub("in"), model);
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("whole"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Pattern = RunOptions.Patterns.Heads,
            Remove = true, Quantize = RunOptions.QuantSchemes.W4A16, GroupSize = 16, EvalData = TokenFile(dir.Path),
        };
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        var whole = RunPlanner.Plan(manifest, spec);
        var split = RunPlanner.Plan(manifest, spec, splitLayers: true);
        long layer = ShardMemory.Estimate(whole.Shards[1], whole.Stages![1], manifest, spec);
        long half = split.Shards.Max(s => ShardMemory.Estimate(s, split.Stages![s.Index], manifest, spec));
        Assert.True(half < layer * 3 / 4, $"half {half}, layer {layer}");
        // Five silos of just under a layer's stage: the halves fit, a whole layer fits none.
        long budget = layer - 1;

        var (first, halves) = await WholeThenHalvesAsync(spec, dir.Sub("halves"), 5, budget, model.Layers);
        Assert.Equal(first.Rounds[^1].Eval!.Value, halves.Rounds[^1].Eval!.Value, 1e-9 * first.Rounds[^1].Eval!.Value);
        foreach (string file in Directory.GetFiles(dir.Sub("whole")).Where(f => !f.EndsWith("shears-report.json", StringComparison.Ordinal)))
            Assert.True(File.ReadAllBytes(file).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("halves"), Path.GetFileName(file)))), Path.GetFileName(file));
    }

    [Fact]
    public async Task A_calibrated_run_keeps_its_layers_whole_and_is_refused_naming_the_layer()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Model with { Layers = 2 });
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer,
            Method = RunOptions.Methods.Wanda, Calibration = TokenFile(dir.Path),
        };
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        Assert.False(RunPlanner.CanSplitLayers(manifest, spec));
        var plan = RunPlanner.Plan(manifest, spec);
        long layer = ShardMemory.Estimate(plan.Shards[1], plan.Stages![1], manifest, spec);
        // Room for everything in all, but no silo for a whole layer.
        var cluster = ClusterFixture.Build(3, memoryBudget: _ => layer * 9 / 10);
        await cluster.DeployAsync();
        await using var _ = cluster;
        var refused = await Assert.ThrowsAsync<RunRejectedException>(() => cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N")).StartAsync(spec));
        Assert.Contains("(the stage of layer 0: 'model.layers.0.", refused.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }

    private static string TokenFile(string dir)
    {
        string path = Path.Combine(dir, "eval.json");
        File.WriteAllText(path, "[[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]]");
        return path;
    }

    /// <summary>
    /// The run on three silos with no budget (whole layers), then the same run into <paramref name="halvesOut"/> on
    /// <paramref name="silos"/> silos of <paramref name="budget"/> bytes each, where every layer runs as two stages:
    /// both completed, with the same dense baseline.
    /// </summary>
    private static async Task<(RunStatus Whole, RunStatus Halves)> WholeThenHalvesAsync(RunSpec spec, string halvesOut, short silos, long budget, int layers)
    {
        RunStatus whole, halves;
        var roomy = ClusterFixture.Build(3);
        await roomy.DeployAsync();
        await using (roomy)
        {
            whole = await Runs.RunToEndAsync(roomy.Client, spec);
            Assert.True(whole.State == RunState.Completed, whole.Error);
        }
        var tight = ClusterFixture.Build(silos, memoryBudget: _ => budget);
        await tight.DeployAsync();
        await using (tight)
        {
            halves = await Runs.RunToEndAsync(tight.Client, spec with { OutputPath = halvesOut });
            Assert.True(halves.State == RunState.Completed, halves.Error);
        }
        Assert.Equal(2 + 2 * layers, halves.Shards);
        Assert.Equal(whole.Baseline!.Value, halves.Baseline!.Value, 1e-9);
        return (whole, halves);
    }
}
