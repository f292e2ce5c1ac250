using System.Runtime.ExceptionServices;
using Shears.Contracts;
using Shears.Engine.Shards;

namespace Shears.Grains.Shards;

/// <summary>What a <see cref="StageWorker"/> needs from the shard that hosts it.</summary>
internal interface IStageHost
{
    /// <summary>This shard's index in the run (where gradients of what it sends come back).</summary>
    int ShardIndex { get; }
    /// <summary>The loading the pipeline's passes belong to (<see cref="ShardAssignment.Epoch"/>); throws when the shard is not loaded.</summary>
    string Epoch { get; }
    StageRunner Stage { get; }
    IReadOnlyList<LoadedPiece> Pieces { get; }
    Task<T> Compute<T>(Func<T> work);
    /// <summary>Training and pruning change weights: the selection statistics kept for the round no longer hold.</summary>
    void WeightsChanging();
    /// <summary>Runs the silo's <see cref="IStageInterceptor"/>s before a micro-batch is worked on.</summary>
    Task BeforeAsync(StageMessage message);
    Task SendNextAsync(StageMessage message);
    Task SendBackAsync(int shard, string pass, int index, byte[] gradient);
}

/// <summary>
/// One stage's queue of pipeline work and the worker that drains it, in order: micro-batches going down and gradients
/// coming back. Every entry point returns at once; the worker's turns run in the hosting activation, its tensor work on
/// the silo's compute executor. An error stops the pass it belongs to and is kept for whoever polls.
/// </summary>
internal sealed class StageWorker(IStageHost host)
{
    private sealed class Pass
    {
        public int Count;
        public int Done;
        public readonly List<PassOutput> Outputs = [];
        public Exception? Error;
        /// <summary>Training: the shard each micro-batch came from.</summary>
        public readonly Dictionary<int, int> From = [];
        public TaskCompletionSource Changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Signal() => Interlocked.Exchange(ref Changed, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    private abstract record Work(string Pass);
    private sealed record Forward(StageMessage Message) : Work(Message.Pass);
    private sealed record Gradient(string Pass, int Index, byte[] Bytes) : Work(Pass);

    private readonly Dictionary<string, Pass> _passes = new(StringComparer.Ordinal);
    private readonly Queue<Work> _queue = new();
    // Set before the worker starts and cleared when it ends, even when it ends without awaiting anything.
    private bool _draining;
    private (string Pass, Task<ShardRoundResult> Job)? _calibrated;

    public void Push(StageMessage message) => Enqueue(new Forward(message));

    public void PushGradient(string pass, int index, byte[] gradient) => Enqueue(new Gradient(pass, index, gradient));

    private void Enqueue(Work work)
    {
        if (!IsCurrent(work.Pass)) return;
        _queue.Enqueue(work);
        if (_draining) return;
        _draining = true;
        _ = DrainAsync();
    }

    /// <summary>A message of a loading that a recovery replaced is dropped: its pass was abandoned.</summary>
    private bool IsCurrent(string pass) => pass.StartsWith(host.Epoch + "/", StringComparison.Ordinal);

    private Pass State(string pass)
    {
        if (!_passes.TryGetValue(pass, out var state)) _passes[pass] = state = new Pass();
        return state;
    }

    private async Task DrainAsync()
    {
        // Runs in the activation: dequeues between awaits, so pushes that interleave only add to the queue.
        try
        {
            await DrainQueueAsync();
        }
        finally
        {
            _draining = false;
        }
    }

    private async Task DrainQueueAsync()
    {
        while (_queue.TryDequeue(out var work))
        {
            if (!IsCurrent(work.Pass) || !_passes.TryGetValue(work.Pass, out var pass) && work is Gradient) continue;
            pass = State(work.Pass);
            if (pass.Error is not null) continue;
            try
            {
                await (work switch
                {
                    Forward f => ForwardAsync(f.Message, pass),
                    Gradient g => BackwardAsync(g, pass),
                    _ => Task.CompletedTask,
                });
            }
            catch (Exception e)
            {
                pass.Error = e;
            }
            pass.Signal();
        }
    }

    private async Task ForwardAsync(StageMessage message, Pass pass)
    {
        var stage = host.Stage;
        pass.Count = message.Count;
        await host.BeforeAsync(message);
        var forward = message with { From = host.ShardIndex };
        switch (message.Kind)
        {
            case PassKind.Evaluate:
            {
                var (next, result) = await host.Compute(() => stage.Evaluate(message.Batch, host.Pieces));
                if (result is not null) pass.Outputs.Add(new PassOutput { Index = message.Index, Result = result });
                else await host.SendNextAsync(forward with { Batch = next! });
                break;
            }
            case PassKind.Calibrate:
                switch (stage.Plan.Kind)
                {
                    case StagePlan.EmbeddingKind:
                        var (hidden, _) = await host.Compute(() => stage.Evaluate(message.Batch, host.Pieces));
                        await host.SendNextAsync(forward with { Batch = hidden! });
                        break;
                    case StagePlan.LayerKind:
                        await host.Compute(() => { stage.Collect(message.Batch); return true; });
                        break;
                }
                break;
            case PassKind.Train:
            {
                pass.From[message.Index] = message.From;
                var (next, done) = await host.Compute(() =>
                {
                    host.WeightsChanging();
                    return stage.Forward(message, host.Pieces);
                });
                if (done is not { } loss)
                {
                    await host.SendNextAsync(forward with { Batch = next! });
                    return; // counted when its gradient has come back
                }
                pass.Outputs.Add(new PassOutput { Index = message.Index, Loss = loss.Loss });
                if (message.From >= 0) await host.SendBackAsync(message.From, message.Pass, message.Index, loss.InputGradient);
                break;
            }
        }
        pass.Done++;
    }

    private async Task BackwardAsync(Gradient gradient, Pass pass)
    {
        var stage = host.Stage;
        var input = await host.Compute(() =>
        {
            host.WeightsChanging();
            return stage.Backward(gradient.Index, pass.Count, gradient.Bytes);
        });
        if (pass.From.Remove(gradient.Index, out int from) && from >= 0)
            await host.SendBackAsync(from, gradient.Pass, gradient.Index, input);
        pass.Done++;
    }

    /// <summary>The pass's progress here, after waiting up to <paramref name="wait"/> for more than <paramref name="taken"/> outputs; throws the pass's error.</summary>
    public async Task<PassProgress> PollAsync(string pass, int taken, TimeSpan wait)
    {
        if (!IsCurrent(pass)) throw new ShardNotLoadedException($"pass {pass} belongs to an earlier loading of this shard");
        var state = State(pass);
        if (state.Error is null && state.Outputs.Count <= taken && wait > TimeSpan.Zero)
            await Task.WhenAny(state.Changed.Task, Task.Delay(wait));
        if (state.Error is { } error) ExceptionDispatchInfo.Throw(error);
        return new PassProgress { Done = state.Done, Outputs = state.Outputs.Skip(taken).ToArray() };
    }

    public void EndPass(string pass) => _passes.Remove(pass);

    /// <summary>Starts pruning this layer from its calibration inputs once <paramref name="inputs"/> micro-batches have arrived.</summary>
    public void StartPruneCalibrated(string pass, Func<Task<ShardRoundResult>> prune, int inputs)
    {
        if (!IsCurrent(pass)) throw new ShardNotLoadedException($"pass {pass} belongs to an earlier loading of this shard");
        if (_calibrated is { } running && running.Pass == pass && !running.Job.IsCompleted) return;
        _calibrated = (pass, PruneWhenCollectedAsync(pass, prune, inputs));
    }

    private async Task<ShardRoundResult> PruneWhenCollectedAsync(string pass, Func<Task<ShardRoundResult>> prune, int inputs)
    {
        var state = State(pass);
        while (state.Done < inputs)
        {
            if (state.Error is { } error) ExceptionDispatchInfo.Throw(error);
            await Task.WhenAny(state.Changed.Task, Task.Delay(TimeSpan.FromSeconds(1)));
        }
        return await prune();
    }

    /// <summary>The calibrated pruning's result, null while it runs.</summary>
    public async Task<ShardRoundResult?> CalibratedResultAsync(string pass, TimeSpan wait)
    {
        if (_calibrated is not { } running || running.Pass != pass)
            throw new ShardNotLoadedException($"no calibrated pruning of pass {pass} runs here (the shard was loaded again)");
        if (!running.Job.IsCompleted) await Task.WhenAny(running.Job, Task.Delay(wait));
        return running.Job.IsCompleted ? await running.Job : null;
    }

    /// <summary>Forgets every pass and queued message (the shard is loaded again or released).</summary>
    public void Reset()
    {
        _queue.Clear();
        _passes.Clear();
        _calibrated = null;
    }
}
