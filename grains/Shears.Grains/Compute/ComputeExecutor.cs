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

    // Jobs running now, this one included.
    private int _busy;

    // libtorch keeps its thread count per OS thread: each job sets it on its compute thread when it must change.
    [ThreadStatic] private static int _torchThreads;

    /// <summary>
    /// Runs tensor work (<see cref="RunAsync{T}"/>) with libtorch's intra-op threads set to the cores shared out among
    /// the jobs running as it starts: a job alone (one layer's SparseGPT) uses every core; jobs at once (pipeline stages)
    /// do not ask for more threads than there are cores, where waiting OpenMP threads spin (two jobs of two threads each
    /// on two cores ran many times slower than one).
    /// </summary>
    public Task<T> RunTorchAsync<T>(Func<T> work, CancellationToken cancellationToken = default) => RunAsync(() =>
    {
        SetTorchThreads(Math.Max(1, Environment.ProcessorCount / Math.Max(1, Volatile.Read(ref _busy))));
        return work();
    }, cancellationToken);

    /// <summary>
    /// Runs one micro-batch of a pipeline pass (<see cref="RunAsync{T}"/>) with libtorch's intra-op threads fixed at the
    /// cores shared out among all compute threads: pipeline stages keep every compute thread busy, so a job never takes
    /// the cores another one starts on a moment later.
    /// </summary>
    public Task<T> RunPipelinedAsync<T>(Func<T> work, CancellationToken cancellationToken = default) => RunAsync(() =>
    {
        SetTorchThreads(Math.Max(1, Environment.ProcessorCount / _threads.Length));
        return work();
    }, cancellationToken);

    private static void SetTorchThreads(int threads)
    {
        if (_torchThreads == threads) return;
        TorchSharp.torch.set_num_threads(threads);
        _torchThreads = threads;
    }

    private void Work()
    {
        foreach (var job in _queue.GetConsumingEnumerable())
        {
            Interlocked.Increment(ref _busy);
            try { job(); }
            finally { Interlocked.Decrement(ref _busy); }
        }
    }

    public void Dispose() => _queue.CompleteAdding();
}
