using System.Runtime.CompilerServices;
using Orleans.Runtime.Messaging;
using Orleans.Serialization;
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
        public Task<IReadOnlyList<ShardResult>> GetShardsAsync() => Task.FromResult<IReadOnlyList<ShardResult>>([]);

        public async IAsyncEnumerable<RunStatus> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (var status in statuses.Skip(1))
            {
                await Task.Yield();
                yield return status;
            }
        }
    }

    /// <summary>
    /// One subscription to <see cref="ScriptedRun"/>: its statuses, then a break (or its end, or silence); its unsubscribe
    /// call may go unanswered, as one sent to a dead silo.
    /// </summary>
    private sealed record Subscription(RunStatus[] Statuses, Exception? BreaksWith = null, bool FallsSilent = false, bool UnsubscribeUnanswered = false);

    private sealed class UnansweredUnsubscribe(IAsyncEnumerable<RunStatus> stream) : IAsyncEnumerable<RunStatus>
    {
        public IAsyncEnumerator<RunStatus> GetAsyncEnumerator(CancellationToken cancellationToken = default) => new Enumerator(stream.GetAsyncEnumerator(cancellationToken));

        private sealed class Enumerator(IAsyncEnumerator<RunStatus> inner) : IAsyncEnumerator<RunStatus>
        {
            public RunStatus Current => inner.Current;
            public ValueTask<bool> MoveNextAsync() => inner.MoveNextAsync();

            public async ValueTask DisposeAsync()
            {
                await inner.DisposeAsync();
                await Task.Delay(Timeout.Infinite);
            }
        }
    }

    /// <summary>
    /// A coordinator whose subscriptions go as scripted, one after the other (the last one again once they run out), as
    /// the runtime's stream of a lost or re-activated coordinator goes: some statuses, then an exception.
    /// </summary>
    private sealed class ScriptedRun(params Subscription[] script) : IRunGrain
    {
        public int Subscribed { get; private set; }
        public int Unsubscribed { get; private set; }
        public Func<Task<RunStatus>> Cancel { get; init; } = () => throw new InvalidOperationException("not scripted");

        public Task<RunStatus> StartAsync(RunSpec spec) => throw new InvalidOperationException("not scripted");
        public Task<RunStatus> GetStatusAsync() => throw new InvalidOperationException("not scripted");
        public Task<RunStatus> CancelAsync() => Cancel();
        public Task<string?> GetReportJsonAsync() => Task.FromResult<string?>(null);
        public Task<IReadOnlyList<ShardResult>> GetShardsAsync() => Task.FromResult<IReadOnlyList<ShardResult>>([]);

        public IAsyncEnumerable<RunStatus> WatchAsync(CancellationToken cancellationToken = default)
        {
            var subscription = script[Math.Min(Subscribed++, script.Length - 1)];
            var stream = Play(subscription, cancellationToken);
            return subscription.UnsubscribeUnanswered ? new UnansweredUnsubscribe(stream) : stream;
        }

        private async IAsyncEnumerable<RunStatus> Play(Subscription subscription, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            try
            {
                foreach (var status in subscription.Statuses)
                {
                    await Task.Yield();
                    yield return status;
                }
                if (subscription.BreaksWith is { } e) throw e;
                if (subscription.FallsSilent) await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            finally { Unsubscribed++; }
        }
    }

    private static readonly RunSpec Spec = new() { ModelPath = "/m", OutputPath = "/o", Sparsity = 0.5 };

    /// <summary>Waits that let a test break a stream many times in well under a second.</summary>
    private static readonly FollowPatience Brisk = new(Retry: TimeSpan.FromMilliseconds(1), Silence: TimeSpan.FromSeconds(30), GiveUp: TimeSpan.FromMinutes(1));

    private static RunStatus Round(int round) => new() { RunId = "followed", Spec = Spec, State = RunState.Running, Phase = $"round {round}/3" };

    private static RunStatus Completed() => Round(3) with { State = RunState.Completed, Phase = "completed" };

    private static async Task<List<string>> Follow(IRunGrain grain, RunStatus first, FollowPatience patience)
    {
        var seen = new List<string>();
        await foreach (var status in RunFollower.Statuses(grain, first, patience)) seen.Add(status.Phase);
        return seen;
    }

    /// <summary>The ways the runtime's stream of a coordinator was seen, or is documented, to break.</summary>
    private static Exception Break(string kind) => kind switch
    {
        // Not an OrleansException: the coordinator re-activated (elsewhere, or in place of one deactivated) has no record of the subscription.
        "aborted" => new EnumerationAbortedException("Enumeration aborted: the remote target does not have a record of this enumerator."),
        "silo unavailable" => new SiloUnavailableException("the silo is gone"),
        "connection failed" => new ConnectionFailedException("Unable to connect to S127.0.0.1:11111:0"),
        "timeout" => new TimeoutException("Response did not arrive on time in 00:00:30"),
        // The runtime's answer when the coordinator's side of the enumeration was cancelled, the follower having cancelled nothing.
        "cancelled" => new OperationCanceledException(),
        // Rethrown as the coordinator's side threw it, e.g. from a silo shutting down.
        "disposed" => new ObjectDisposedException("IServiceProvider"),
        "invalid operation" => new InvalidOperationException("Activation is deactivating"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    [Theory]
    [InlineData("aborted")]
    [InlineData("silo unavailable")]
    [InlineData("connection failed")]
    [InlineData("timeout")]
    [InlineData("cancelled")]
    [InlineData("disposed")]
    [InlineData("invalid operation")]
    public async Task AStreamBrokenMidRunIsSubscribedAgainAndFollowedToTheEnd(string kind)
    {
        var grain = new ScriptedRun(
            new Subscription([Round(1), Round(2)], BreaksWith: Break(kind)),
            new Subscription([Round(2), Round(3), Completed()]));
        var seen = await Follow(grain, Round(1), Brisk);
        Assert.Equal(["round 1/3", "round 1/3", "round 2/3", "round 2/3", "round 3/3", "completed"], seen);
        Assert.Equal(2, grain.Subscribed);
        Assert.Equal(2, grain.Unsubscribed);
    }

    [Fact]
    public async Task AStreamBrokenAgainAndAgainInEveryWayIsFollowedToTheEnd()
    {
        string[] kinds = ["aborted", "silo unavailable", "aborted", "cancelled", "timeout", "aborted", "disposed", "connection failed"];
        var script = kinds.Select((kind, i) => new Subscription(i % 2 == 0 ? [Round(2)] : [], BreaksWith: Break(kind)))
            .Append(new Subscription([Round(3), Completed()])).ToArray();
        var grain = new ScriptedRun(script);
        var seen = await Follow(grain, Round(1), Brisk);
        Assert.Equal("completed", seen[^1]);
        Assert.Equal(["round 1/3", "round 2/3", "round 2/3", "round 2/3", "round 2/3", "round 3/3", "completed"], seen);
        Assert.Equal(kinds.Length + 1, grain.Subscribed);
    }

    [Fact]
    public async Task AStreamThatEndsBeforeTheRunIsSubscribedAgain()
    {
        var grain = new ScriptedRun(new Subscription([Round(2)]), new Subscription([Completed()]));
        Assert.Equal(["round 1/3", "round 2/3", "completed"], await Follow(grain, Round(1), Brisk));
        Assert.Equal(2, grain.Subscribed);
    }

    [Fact]
    public async Task ASilentStreamIsSubscribedAgain()
    {
        // The call in flight to a dead silo: no answer, no error, until the client's response timeout.
        var grain = new ScriptedRun(new Subscription([Round(2)], FallsSilent: true), new Subscription([Completed()]));
        var seen = await Follow(grain, Round(1), Brisk with { Silence = TimeSpan.FromMilliseconds(200) });
        Assert.Equal(["round 1/3", "round 2/3", "completed"], seen);
        Assert.Equal(2, grain.Unsubscribed);
    }

    [Fact]
    public async Task AnUnansweredUnsubscribeHoldsTheFollowingUpNoLongerThanASilence()
    {
        var grain = new ScriptedRun(new Subscription([Round(2)], BreaksWith: Break("aborted"), UnsubscribeUnanswered: true), new Subscription([Completed()]));
        var seen = await Follow(grain, Round(1), Brisk with { Silence = TimeSpan.FromMilliseconds(200) }).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(["round 1/3", "round 2/3", "completed"], seen);
    }

    [Fact]
    public async Task AStreamThatStaysBrokenEndsWithAClearErrorAfterThePatience()
    {
        var grain = new ScriptedRun(new Subscription([], BreaksWith: Break("aborted")));
        var patience = Brisk with { Retry = TimeSpan.FromMilliseconds(10), GiveUp = TimeSpan.FromMilliseconds(300) };
        var e = await Assert.ThrowsAsync<RunUnreachableException>(() => Follow(grain, Round(1), patience));
        Assert.Contains("run followed", e.Message);
        Assert.Contains("EnumerationAbortedException", e.Message);
        Assert.Contains("shears status followed", e.Message);
        Assert.IsType<EnumerationAbortedException>(e.InnerException);
        Assert.True(grain.Subscribed > 2, $"{grain.Subscribed} subscriptions");
    }

    [Fact]
    public async Task AStreamThisClientCannotReadIsNotSubscribedAgain()
    {
        var grain = new ScriptedRun(new Subscription([Round(2)], BreaksWith: new CodecNotFoundException("no codec for RunStatus")), new Subscription([Completed()]));
        await Assert.ThrowsAsync<CodecNotFoundException>(() => Follow(grain, Round(1), Brisk));
        Assert.Equal(1, grain.Subscribed);
    }

    [Theory]
    [InlineData("aborted")]
    [InlineData("silo unavailable")]
    [InlineData("connection failed")]
    [InlineData("timeout")]
    [InlineData("cancelled")]
    [InlineData("disposed")]
    [InlineData("invalid operation")]
    public void EveryKnownBreakIsABrokenStream(string kind) => Assert.True(RunFollower.IsBrokenStream(Break(kind)));

    [Fact]
    public void AStreamThatCannotBeReadIsNotABrokenStream()
    {
        Assert.False(RunFollower.IsBrokenStream(new SerializerException("unknown field")));
        Assert.False(RunFollower.IsBrokenStream(new CodecNotFoundException("no codec for RunStatus")));
    }

    [Fact]
    public async Task ACancelThatFailsIsReportedAndEscapesNothing()
    {
        // Thrown before any task exists, as a proxy whose client is closing may.
        var grain = new ScriptedRun(new Subscription([Completed()])) { Cancel = () => throw new SiloUnavailableException("the silo is gone") };
        var errors = new StringWriter();
        await RunFollower.RequestCancelAsync(grain, "followed", errors);
        Assert.Contains("could not ask run followed to cancel", errors.ToString());
        Assert.Contains("the silo is gone", errors.ToString());

        // From the Ctrl+C token's callback, as RunAsync registers it: Cancel() must not throw into the signal handler.
        var faulted = new ScriptedRun(new Subscription([Completed()])) { Cancel = () => Task.FromException<RunStatus>(new TimeoutException("no answer")) };
        var later = new StringWriter();
        using var ctrlC = new CancellationTokenSource();
        using (ctrlC.Token.Register(() => _ = RunFollower.RequestCancelAsync(faulted, "followed", later)))
            ctrlC.Cancel();
        Assert.Contains("no answer", later.ToString());
    }

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
