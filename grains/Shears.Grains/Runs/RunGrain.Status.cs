using Shears.Contracts;
using Shears.Grains.Diagnostics;

namespace Shears.Grains.Runs;

// The run's status: persisted with every change, streamed to followers, counted in the metrics.
public sealed partial class RunGrain
{
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task SetStatus(Func<RunStatus, RunStatus> change)
    {
        state.State.Status = change(Status);
        await SaveStateAsync();
        Signal();
        if (!Status.IsFinished) ShearsMetrics.Progressed(RunId);
    }

    private void Signal() => Interlocked.Exchange(ref _changed, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    async IAsyncEnumerable<RunStatus> IRunGrain.WatchAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        while (true)
        {
            var changed = _changed.Task;
            var status = Status;
            yield return status;
            if (status.IsFinished || cancellationToken.IsCancellationRequested) yield break;
            // A heartbeat every few seconds keeps the stream alive while a long phase runs (`shears run` takes a silence
            // of three as a lost coordinator and subscribes again).
            await Task.WhenAny(changed, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken));
        }
    }

    private static string Describe(Exception e)
    {
        while (e is AggregateException { InnerException: { } inner }) e = inner;
        // libtorch appends its native stack to the message: keep the first line.
        return e is System.Runtime.InteropServices.ExternalException ? e.Message.Split('\n')[0] : e.Message;
    }

    private async Task Finish(RunState final, string message)
    {
        state.State.Status = Status with { State = final, Phase = final.ToString().ToLowerInvariant(), Error = message, FinishedAt = DateTimeOffset.UtcNow };
        await SaveStateAsync();
        Signal();
        ShearsMetrics.RunsFinished.Add(1, ShearsMetrics.Tag("status", final.ToString().ToLowerInvariant()));
    }
}
