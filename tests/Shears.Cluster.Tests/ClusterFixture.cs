using Orleans.TestingHost;
using Shears.Contracts;
using Shears.Grains;

namespace Shears.Cluster.Tests;

/// <summary>Three silos in this process (no ports bound), each with Shears' grains as a real silo has them.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public InProcessTestCluster Cluster { get; private set; } = null!;

    /// <param name="coordinatorSilo">Name of a silo that runs coordinators only (holds no shards), if any.</param>
    /// <param name="allKeepHistograms">Every silo keeps every piece's histograms (by default only the first does).</param>
    /// <param name="configure">More silo configuration (a test's own timeouts or services).</param>
    /// <param name="memoryBudget">Each silo's --memory-budget by silo name (the default fraction of memory when null).</param>
    public static InProcessTestCluster Build(short silos, string? coordinatorSilo = null, bool allKeepHistograms = false, Action<Orleans.Hosting.ISiloBuilder>? configure = null,
        Func<string, long>? memoryBudget = null)
    {
        var builder = new InProcessTestClusterBuilder(silos);
        string state = Path.Combine(StateRoot, Guid.NewGuid().ToString("N"));
        builder.ConfigureSilo((options, silo) =>
        {
            // Not AddMemoryGrainStorage: its state lives in grains on the silos, so stopping a silo can lose a run's
            // state or fail its write. Files in a folder all silos reach, as the silo host keeps them without Redis.
            silo.AddShearsFileStorage(state);
            // Not UseInMemoryReminderService either: its table is a grain, which a stopped silo can take along.
            silo.AddShearsFileReminders(state);
            silo.AddShears(o =>
            {
                o.ComputeThreads = 1;
                o.ResumeCheckPeriod = ResumeCheckPeriod;
                // The first silo keeps every piece's histograms, the others none: both ways of counting at the
                // threshold take part in every multi-silo run and must agree with the reference.
                o.CachedHistogramElements = allKeepHistograms || options.SiloName.EndsWith('0') ? 0 : long.MaxValue;
                if (options.SiloName == coordinatorSilo) o.Role = "coordinator";
                if (memoryBudget is not null) o.MemoryBudget = memoryBudget(options.SiloName);
            });
            configure?.Invoke(silo);
        });
        return builder.Build();
    }

    /// <summary>How often a run's reminder calls its coordinator in the test clusters (a silo's default is a minute).</summary>
    private static readonly TimeSpan ResumeCheckPeriod = TimeSpan.FromSeconds(2);

    /// <summary>The clusters' state folders, removed when the test process ends.</summary>
    private static readonly string StateRoot = CreateStateRoot();

    private static string CreateStateRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), "shears-test-state-" + Environment.ProcessId);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(root, recursive: true); } catch (IOException) { } };
        return root;
    }

    public async Task InitializeAsync()
    {
        Cluster = Build(3);
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "three silos";
}

public static class Runs
{
    /// <summary>Writes a 6-layer bf16 checkpoint to dir/in; the spec prunes it to 60% in 16 linear rounds on shards of at most 400,000 elements.</summary>
    public static Func<string, RunSpec> ManyRounds(Shears.Testing.TempDir dir)
    {
        Shears.Pruning.Checkpoints.DemoCheckpoint.Write(dir.Sub("in"),
            new Shears.Pruning.Checkpoints.DemoCheckpointOptions(HiddenSize: 384, Layers: 6, Heads: 6, KvHeads: 2, IntermediateSize: 1024));
        return output => new()
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub(output), Sparsity = 0.6, Schedule = RunOptions.Schedules.Linear, Rounds = 16,
            ShardElements = 400_000,
        };
    }

    public static async Task<RunStatus> RunToEndAsync(IClusterClient client, RunSpec spec, string? runId = null, Func<RunStatus, Task>? watch = null)
    {
        var grain = client.GetGrain<IRunGrain>(runId ?? Guid.NewGuid().ToString("N"));
        var status = await grain.StartAsync(spec);
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (!status.IsFinished)
        {
            Assert.True(DateTime.UtcNow < deadline, $"run did not finish: {status.Phase}");
            await Task.Delay(20);
            status = await grain.GetStatusAsync();
            if (watch is not null) await watch(status);
        }
        return status;
    }
}
