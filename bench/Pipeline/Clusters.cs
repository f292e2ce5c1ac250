using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Orleans.TestingHost;
using Shears.Contracts;
using Shears.Grains.Compute;
using TorchSharp;

namespace Shears.PipelineBench;

/// <summary>Silos hosted in this process, each with Shears' grains as a real silo has them.</summary>
public sealed class BenchCluster(int silos, int computeThreads, InProcessTestCluster cluster) : IAsyncDisposable
{
    public int Silos { get; } = silos;
    public int ComputeThreads { get; } = computeThreads;

    public static async Task<BenchCluster> StartAsync(int silos, int computeThreads, string stateRoot)
    {
        var builder = new InProcessTestClusterBuilder((short)silos);
        string state = Path.Combine(stateRoot, $"silos-{silos}-{Guid.NewGuid():N}");
        builder.ConfigureSilo((_, silo) =>
        {
            silo.AddShearsFileStorage(state);
            // A run's coordinator keeps a reminder while it runs (runs resume without a client).
            silo.AddShearsFileReminders(state);
            silo.AddShears(o => o.ComputeThreads = computeThreads);
        });
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new BenchCluster(silos, computeThreads, cluster);
    }

    /// <summary>
    /// Sets libtorch's intra-op threads on every compute thread of every silo. The setting is per OS thread once a thread
    /// has run an op, so each compute thread sets its own: one job per thread, held at a barrier until all have run.
    /// </summary>
    public async Task SetTorchThreadsAsync(int threads)
    {
        foreach (var silo in cluster.Silos.Cast<InProcessSiloHandle>())
        {
            var executor = silo.ServiceProvider.GetRequiredService<ComputeExecutor>();
            using var barrier = new Barrier(executor.Threads);
            await Task.WhenAll(Enumerable.Range(0, executor.Threads).Select(_ => executor.RunAsync(() =>
            {
                torch.set_num_threads(threads);
                barrier.SignalAndWait();
            })));
        }
    }

    /// <summary>
    /// Starts a run and follows its status every few milliseconds; returns the time from the first status in phase
    /// <c>from</c> to the first status that <c>ended</c> accepts, for each window asked, and the last status seen.
    /// The run is cancelled once every window has closed (its later rounds and export are not what is measured).
    /// </summary>
    public async Task<(double[] Seconds, RunStatus Status)> TimeAsync(RunSpec spec, params (string From, Func<RunStatus, bool> Ended)[] windows)
    {
        var grain = cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var status = await grain.StartAsync(spec);
        var clock = Stopwatch.StartNew();
        var opened = new double?[windows.Length];
        var closed = new double?[windows.Length];
        var deadline = TimeSpan.FromMinutes(20);
        while (true)
        {
            double now = clock.Elapsed.TotalSeconds;
            for (int w = 0; w < windows.Length; w++)
            {
                if (opened[w] is null && status.Phase == windows[w].From) opened[w] = now;
                if (opened[w] is not null && closed[w] is null && (windows[w].Ended(status) || status.IsFinished)) closed[w] = now;
            }
            if (status.IsFinished || closed.All(c => c is not null)) break;
            if (clock.Elapsed > deadline) throw new TimeoutException($"run {status.RunId} still in phase '{status.Phase}' after {deadline}");
            await Task.Delay(5);
            status = await grain.GetStatusAsync();
        }
        if (status.State == RunState.Failed) throw new InvalidOperationException($"run {status.RunId} failed: {status.Error}");
        var missing = Enumerable.Range(0, windows.Length).Where(w => closed[w] is null).Select(w => windows[w].From).ToArray();
        if (missing.Length > 0) throw new InvalidOperationException($"run {status.RunId} ended ({status.State}) without passing through: {string.Join(", ", missing)}");
        if (!status.IsFinished)
        {
            await grain.CancelAsync();
            for (var waited = Stopwatch.StartNew(); !(await grain.GetStatusAsync()).IsFinished && waited.Elapsed < TimeSpan.FromMinutes(2);) await Task.Delay(50);
        }
        return (Enumerable.Range(0, windows.Length).Select(w => closed[w]!.Value - opened[w]!.Value).ToArray(), status);
    }

    public async ValueTask DisposeAsync() => await cluster.DisposeAsync();
}
