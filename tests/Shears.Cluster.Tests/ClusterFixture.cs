using Orleans.TestingHost;
using Shears.Contracts;
using Shears.Grains;

namespace Shears.Cluster.Tests;

/// <summary>Three silos in this process (no ports bound), each with Shears' grains as a real silo has them.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public InProcessTestCluster Cluster { get; private set; } = null!;

    /// <param name="coordinatorSilo">Name of a silo that runs coordinators only (holds no shards), if any.</param>
    public static InProcessTestCluster Build(short silos, string? coordinatorSilo = null)
    {
        var builder = new InProcessTestClusterBuilder(silos);
        builder.ConfigureSilo((options, silo) =>
        {
            silo.AddMemoryGrainStorage(ShearsStorage.Name);
            silo.AddShears(o =>
            {
                o.ComputeThreads = 1;
                // The first silo keeps every piece's histograms, the others none: both ways of counting at the
                // threshold take part in every multi-silo run and must agree with the reference.
                o.CachedHistogramElements = options.SiloName.EndsWith('0') ? 0 : long.MaxValue;
                if (options.SiloName == coordinatorSilo) o.Role = "coordinator";
            });
        });
        return builder.Build();
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
