using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>A silo that holds shards stops in the middle of a many-round run; the run ends with the undisturbed output.</summary>
public class SiloLossTests
{
    [Fact]
    public async Task CoordinatorOnlySilosHoldNoShards()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        await using var cluster = ClusterFixture.Build(3, coordinatorSilo: "Silo_0");
        await cluster.DeployAsync();
        var coordinatorOnly = cluster.Silos.Single(s => s.Name == "Silo_0").SiloAddress.ToString();
        // Roles travel as silo metadata; wait until every silo has heard every other's.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!cluster.Silos.All(s => cluster.Silos.All(t =>
            ((Orleans.TestingHost.InProcessSiloHandle)s).ServiceProvider.GetRequiredService<Orleans.Runtime.MembershipService.SiloMetadata.ISiloMetadataCache>()
                .GetSiloMetadata(t.SiloAddress)?.Metadata.ContainsKey("shears-role") == true)))
        {
            Assert.True(DateTime.UtcNow < deadline, "silo metadata did not spread");
            await Task.Delay(100);
        }
        var status = await Runs.RunToEndAsync(cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, ShardElements = 300,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        using var report = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var silos = report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().ToArray();
        Assert.Equal(2, silos.Length);
        Assert.DoesNotContain(coordinatorOnly, silos);
    }

    [Fact]
    public async Task StoppingASiloMidRunChangesNothingInTheOutput()
    {
        using var dir = new TempDir();
        await RunCalmAndDisturbed(dir, Runs.ManyRounds(dir));
    }

    /// <summary>
    /// The same with every silo keeping its pieces' histograms for the round: the shards that re-activate after the
    /// stop rebuild them from the reloaded weights and masks (in the test above only one silo keeps them, so whether a
    /// re-activated shard does depends on where it lands).
    /// </summary>
    [Fact]
    public async Task StoppingASiloMidRunWithKeptHistogramsChangesNothingInTheOutput()
    {
        using var dir = new TempDir();
        var (calm, _) = await RunCalmAndDisturbed(dir, Runs.ManyRounds(dir), allKeepHistograms: true);
        // And both equal the plain reference: the output is right, not only the same twice.
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("calm"), ReferencePruner.Masks(manifest, calm.Rounds[^1].TargetSparsity, global: true));
    }

    /// <summary>
    /// Fine-tuning changes the weights every round: a shard that re-activates elsewhere must start from the weights of
    /// the last committed round (persisted beside its masks), not from the checkpoint's.
    /// </summary>
    [Fact]
    public async Task StoppingASiloWhileFineTuningChangesNothingInTheOutput()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 64, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128)
            with { DType = TensorDType.F32 });
        var random = new Random(9);
        string train = Path.Combine(dir.Path, "train.json");
        File.WriteAllText(train, System.Text.Json.JsonSerializer.Serialize(
            Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, 24).Select(_ => random.Next(128)).ToArray()).ToArray()));
        RunSpec Spec(string output) => new()
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub(output), Sparsity = 0.7, Schedule = RunOptions.Schedules.Linear, Rounds = 10,
            FinetuneSteps = 4, FinetuneData = train, LearningRate = 1e-3, Batch = 4,
        };

        var (calm, disturbed) = await RunCalmAndDisturbed(dir, Spec);
        Assert.Equal(calm.Rounds.Select(r => r.FinetuneLoss), disturbed.Rounds.Select(r => r.FinetuneLoss));
    }

    /// <summary>
    /// --remove --quantize: the shards that re-activate after the stop carry on from the committed round's masks, and
    /// the smaller, quantized model (its config.json and every safetensors file) is the undisturbed run's byte for byte.
    /// </summary>
    [Fact]
    public async Task StoppingASiloInARunThatRemovesAndQuantizesChangesNothingInTheOutput()
    {
        using var dir = new TempDir();
        var many = Runs.ManyRounds(dir);
        RunSpec Spec(string output) => many(output) with
        {
            Pattern = RunOptions.Patterns.Neurons, Scope = RunOptions.Scopes.Layer, Sparsity = 0.25, Rounds = 8, Remove = true,
            Quantize = RunOptions.QuantSchemes.W4A16,
        };
        await RunCalmAndDisturbed(dir, Spec);
        using var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("disturbed"), "config.json")));
        Assert.Equal(1024 - 256, config.RootElement.GetProperty("intermediate_size").GetInt32());
        Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("calm"), "config.json")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("disturbed"), "config.json"))));
    }

    /// <summary>
    /// A detached run: started, and then never called again. Its coordinator's silo stops mid-run; nothing but the
    /// run's reminder re-activates the coordinator on another silo, and the test only watches the filesystem until the
    /// output appears, byte-identical to the undisturbed run's.
    /// </summary>
    [Fact]
    public async Task ADetachedRunWhoseCoordinatorsSiloStopsFinishesWithoutAnyCall()
    {
        using var dir = new TempDir();
        var many = Runs.ManyRounds(dir);
        // More rounds than the other tests: the stop must land well before the end.
        RunSpec Spec(string output) => many(output) with { Rounds = 40 };
        await using var cluster = ClusterFixture.Build(3);
        await cluster.DeployAsync();
        var calm = await Runs.RunToEndAsync(cluster.Client, Spec("calm"));
        Assert.True(calm.State == RunState.Completed, calm.Error);

        var grain = cluster.Client.GetGrain<IRunGrain>("detached");
        await grain.StartAsync(Spec("detached"));
        var stopAt = Stopwatch.StartNew();
        // Round 3's masks on disk: the run is under way, with 37 rounds to go.
        string state = Path.Combine(dir.Path, ".shears-state-detached");
        while (!Directory.Exists(state) || !Directory.EnumerateFiles(state, "*.round-3.mask", SearchOption.AllDirectories).Any())
        {
            Assert.True(stopAt.Elapsed < TimeSpan.FromMinutes(2), "the run did not reach round 3");
            await Task.Delay(20);
        }
        // Where the coordinator lives, from the grain directory: asking the grain itself would be a call.
        var coordinator = await cluster.Client.GetGrain<IManagementGrain>(0).GetActivationAddress(grain);
        Assert.NotNull(coordinator);
        var victim = cluster.Silos.Single(s => s.SiloAddress.Equals(coordinator));
        await cluster.StopSiloAsync(victim);
        Assert.False(Directory.Exists(dir.Sub("detached")), "the run ended before its coordinator's silo stopped");

        var waited = Stopwatch.StartNew();
        while (!Directory.Exists(dir.Sub("detached")))
        {
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(3), "the detached run did not finish after its coordinator's silo stopped");
            await Task.Delay(100);
        }
        foreach (string file in Directory.GetFiles(dir.Sub("calm")).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json"))
            Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("calm"), file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("detached"), file))), file);

        // Now that it is over: it resumed on another silo, and its reminder goes with it.
        var status = await grain.GetStatusAsync();
        Assert.True(status.State == RunState.Completed, status.Error);
        Assert.NotEqual(coordinator.ToString(), status.Coordinator);
        var reminders = ((InProcessSiloHandle)cluster.Silos[0]).ServiceProvider.GetRequiredService<IReminderTable>();
        while ((await reminders.ReadRows(0, 0)).Reminders.Count > 0)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(4), "the finished run's reminder was not removed");
            await Task.Delay(100);
        }
    }

    /// <summary>
    /// The same run twice on a fresh three-silo cluster: undisturbed, then with a silo other than the coordinator's
    /// stopped from round 3; both complete and their output checkpoints are byte-identical.
    /// </summary>
    private static async Task<(RunStatus Calm, RunStatus Disturbed)> RunCalmAndDisturbed(TempDir dir, Func<string, RunSpec> spec, bool allKeepHistograms = false)
    {
        await using var cluster = ClusterFixture.Build(3, allKeepHistograms: allKeepHistograms);
        await cluster.DeployAsync();
        var calm = await Runs.RunToEndAsync(cluster.Client, spec("calm"));
        Assert.True(calm.State == RunState.Completed, calm.Error);

        bool stopped = false;
        var disturbed = await Runs.RunToEndAsync(cluster.Client, spec("disturbed"), watch: async status =>
        {
            if (stopped || status.Round < 3 || status.Coordinator is null) return;
            stopped = true;
            var victim = cluster.Silos.First(s => s.SiloAddress.ToString() != status.Coordinator);
            await cluster.StopSiloAsync(victim);
        });
        Assert.True(stopped, "the run ended before a silo could be stopped");
        Assert.True(disturbed.State == RunState.Completed, disturbed.Error);
        Assert.True(disturbed.Recoveries >= 1, "no recovery happened: the stop came too late to test anything");
        foreach (string file in Directory.GetFiles(dir.Sub("calm")).Select(f => Path.GetFileName(f)!).Where(f => f.EndsWith(".safetensors")))
            Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("calm"), file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("disturbed"), file))), file);
        return (calm, disturbed);
    }
}
