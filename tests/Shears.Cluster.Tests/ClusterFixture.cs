using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Runtime.Hosting;
using Orleans.Storage;
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
    public static InProcessTestCluster Build(short silos, string? coordinatorSilo = null, bool allKeepHistograms = false)
    {
        var builder = new InProcessTestClusterBuilder(silos);
        builder.ConfigureSilo((options, silo) =>
        {
            // Not AddMemoryGrainStorage: its state lives in grains on the silos, so stopping a silo can lose a run's state
            // or fail its write, which no external store (Redis) does.
            silo.Services.AddGrainStorage(ShearsStorage.Name, (services, _) => new SharedGrainStorage(
                services.GetRequiredService<Orleans.Serialization.Serializer>(),
                services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Orleans.Configuration.ClusterOptions>>().Value.ClusterId));
            silo.AddShears(o =>
            {
                o.ComputeThreads = 1;
                // The first silo keeps every piece's histograms, the others none: both ways of counting at the
                // threshold take part in every multi-silo run and must agree with the reference.
                o.CachedHistogramElements = allKeepHistograms || options.SiloName.EndsWith('0') ? 0 : long.MaxValue;
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

/// <summary>
/// Grain state in this process's memory, shared by every silo of a cluster and outliving any one of them: what an
/// external store gives a real cluster. Each write stores a serialized copy and checks the ETag as stores do.
/// </summary>
public sealed class SharedGrainStorage(Orleans.Serialization.Serializer serializer, string clusterId) : IGrainStorage
{
    private static readonly ConcurrentDictionary<string, (string ETag, byte[] State)> Store = new();
    private static readonly object Gate = new();

    private string Key(string stateName, GrainId grainId) => $"{clusterId}/{stateName}/{grainId}";

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        if (Store.TryGetValue(Key(stateName, grainId), out var entry))
        {
            grainState.State = serializer.Deserialize<T>(entry.State);
            (grainState.ETag, grainState.RecordExists) = (entry.ETag, true);
        }
        else
        {
            grainState.State = Activator.CreateInstance<T>();
            (grainState.ETag, grainState.RecordExists) = (null, false);
        }
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string key = Key(stateName, grainId);
        lock (Gate)
        {
            string? stored = Store.TryGetValue(key, out var entry) ? entry.ETag : null;
            if (stored != grainState.ETag) throw new InconsistentStateException($"ETag {grainState.ETag} is not the stored {stored}", stored, grainState.ETag);
            string etag = Guid.NewGuid().ToString("N");
            Store[key] = (etag, serializer.SerializeToArray(grainState.State));
            (grainState.ETag, grainState.RecordExists) = (etag, true);
        }
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        lock (Gate) Store.TryRemove(Key(stateName, grainId), out _);
        grainState.State = Activator.CreateInstance<T>();
        (grainState.ETag, grainState.RecordExists) = (null, false);
        return Task.CompletedTask;
    }
}
