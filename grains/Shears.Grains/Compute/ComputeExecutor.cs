using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Shears.Grains.Compute;

/// <summary>
/// Runs tensor work on a few dedicated threads of this silo, so the Orleans scheduler never runs
/// kernels, TorchSharp's thread-static dispose scopes never span an await, and memory stays bounded
/// by the number of jobs in flight.
/// </summary>
public sealed class ComputeExecutor : IDisposable
{
    private readonly BlockingCollection<Action> _queue = new();
    private readonly Thread[] _threads;

    public ComputeExecutor(IOptions<ShearsOptions> options)
    {
        int count = options.Value.ComputeThreads > 0 ? options.Value.ComputeThreads : Math.Max(1, Environment.ProcessorCount);
        _threads = new Thread[count];
        for (int i = 0; i < count; i++)
        {
            _threads[i] = new Thread(Work) { IsBackground = true, Name = $"shears-compute-{i}" };
            _threads[i].Start();
        }
    }

    public int Threads => _threads.Length;

    /// <summary>
    /// libtorch's intra-op threads on each compute thread: the cores shared out among the compute threads, so that jobs
    /// running at once do not ask for more threads than there are cores (waiting OpenMP threads spin, and two jobs of
    /// two threads each on two cores ran many times slower than one).
    /// </summary>
    public int TorchThreads => Math.Max(1, Environment.ProcessorCount / Threads);

    // libtorch keeps its thread count per OS thread: each compute thread sets it before its first tensor job.
    [ThreadStatic] private static int _torchThreads;

    /// <summary>Runs tensor work (<see cref="RunAsync{T}"/>) with this executor's share of libtorch's threads.</summary>
    public Task<T> RunTorchAsync<T>(Func<T> work, CancellationToken cancellationToken = default) => RunAsync(() =>
    {
        if (_torchThreads != TorchThreads)
        {
            TorchSharp.torch.set_num_threads(TorchThreads);
            _torchThreads = TorchThreads;
        }
        return work();
    }, cancellationToken);

    public Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken = default)
    {
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _queue.Add(() =>
        {
            if (cancellationToken.IsCancellationRequested) { completion.TrySetCanceled(cancellationToken); return; }
            try { completion.TrySetResult(work()); }
            catch (Exception e) { completion.TrySetException(e); }
        }, CancellationToken.None);
        return completion.Task;
    }

    public Task RunAsync(Action work, CancellationToken cancellationToken = default) =>
        RunAsync(() => { work(); return true; }, cancellationToken);

    private void Work()
    {
        foreach (var job in _queue.GetConsumingEnumerable()) job();
    }

    public void Dispose() => _queue.CompleteAdding();
}
