using System.Runtime.CompilerServices;
using Shears.Contracts;

namespace Shears.Client.Tests;

public class RunFollowerTests
{
    /// <summary>A coordinator that streams what it has: the run's statuses, then (re-activated without its state) blank ones.</summary>
    private sealed class StreamingRun(params RunStatus[] statuses) : IRunGrain
    {
        public Task<RunStatus> StartAsync(RunSpec spec) => Task.FromResult(statuses[0]);
        public Task<RunStatus> GetStatusAsync() => Task.FromResult(statuses[^1]);
        public Task<RunStatus> CancelAsync() => Task.FromResult(statuses[^1]);
        public Task<string?> GetReportJsonAsync() => Task.FromResult<string?>(null);

        public async IAsyncEnumerable<RunStatus> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (var status in statuses.Skip(1))
            {
                await Task.Yield();
                yield return status;
            }
        }
    }

    private static readonly RunSpec Spec = new() { ModelPath = "/m", OutputPath = "/o", Sparsity = 0.5 };

    [Fact]
    public async Task ACoordinatorBackWithoutItsStateEndsTheFollowingWithAClearError()
    {
        var first = new RunStatus { RunId = "lost", Spec = Spec, State = RunState.Running, Phase = "round 1/4" };
        var grain = new StreamingRun(first, first with { Phase = "round 2/4" }, new RunStatus { RunId = "lost" });
        var seen = new List<string>();
        var e = await Assert.ThrowsAsync<RunStateLostException>(async () =>
        {
            await foreach (var status in RunFollower.Statuses(grain, first)) seen.Add(status.Phase);
        });
        Assert.Equal(["round 1/4", "round 2/4"], seen);
        Assert.Contains("run lost", e.Message);
        Assert.Contains("state", e.Message);
    }

    [Fact]
    public async Task ARunFollowedToItsEndEnds()
    {
        var first = new RunStatus { RunId = "fine", Spec = Spec, State = RunState.Running, Phase = "round 1/1" };
        var grain = new StreamingRun(first, first with { State = RunState.Completed, Phase = "completed" });
        var seen = new List<RunState>();
        await foreach (var status in RunFollower.Statuses(grain, first)) seen.Add(status.State);
        Assert.Equal([RunState.Running, RunState.Completed], seen);
    }
}
