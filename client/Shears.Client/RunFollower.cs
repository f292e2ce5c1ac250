using System.Globalization;
using Orleans.Serialization;
using Shears.Contracts;
using Spectre.Console;

namespace Shears.Client;

/// <summary>Starts a run and follows it to the end: live bars and tables in a terminal, plain lines otherwise.</summary>
public static class RunFollower
{
    public static async Task<int> RunAsync(ClusterTarget cluster, RunSpec spec, string runId, bool detach, CancellationToken token)
    {
        IRunsClient runs;
        ClientTimes.Mark("parsed");
        try { runs = await RunsClient.OpenAsync(cluster, token); }
        catch (Exception e) when (e is ArgumentException or ClusterUnavailableException or TimeoutException)
        {
            return Commands.Fail([$"cannot reach the cluster: {e.Message}"]);
        }
        ClientTimes.Mark(cluster.Embedded ? "silo-started" : "connected");
        await using var owned = runs;
        RunStatus status;
        try { status = await runs.StartAsync(runId, spec); }
        catch (RunRejectedException e) { return Commands.Fail([e.Message]); }
        catch (ClusterUnavailableException e) { return Commands.Fail([$"cannot reach the cluster: {e.Message}"]); }
        if (detach)
        {
            Console.WriteLine(runId);
            return Commands.Ok;
        }

        ClientTimes.Mark("submitted");
        using var cancelRegistration = token.Register(() => _ = RequestCancelAsync(() => runs.CancelAsync(runId), runId, Console.Error));
        int code = await FollowAsync(runs, status, token);
        ClientTimes.Mark("finished");
        return code;
    }

    /// <summary>
    /// Follows a run to its end, started here or elsewhere (<c>shears watch</c>): live bars in a terminal, plain lines
    /// otherwise, then the rounds table; the exit code is the run's outcome.
    /// </summary>
    public static async Task<int> FollowAsync(IRunsClient runs, RunStatus status, CancellationToken token)
    {
        string runId = status.RunId, output = status.Spec?.OutputPath ?? "--out";
        var statuses = Statuses(() => runs.WatchAsync(runId), runs.IsBrokenStream, status);
        try
        {
            status = Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive
                ? await FollowPlain(statuses, status, token)
                : await FollowLive(statuses, status, token);
        }
        catch (Exception e) when (e is RunStateLostException or RunUnreachableException)
        {
            Console.Error.WriteLine($"shears: {e.Message}");
            return Commands.RunFailed;
        }

        switch (status.State)
        {
            case RunState.Completed:
                RunView.PrintRounds(status);
                Console.WriteLine($"wrote {output} (run {runId})");
                return Commands.Ok;
            case RunState.Cancelled:
                Console.Error.WriteLine($"shears: run {runId} was cancelled; nothing was written to {output}");
                return Commands.RunFailed;
            default:
                Console.Error.WriteLine($"shears: run {runId} failed: {status.Error}");
                return Commands.RunFailed;
        }
    }

    /// <summary>
    /// Asks the coordinator to cancel the run, for Ctrl+C. It runs from the token's callback, so nothing may escape it
    /// (into the signal handler, or unobserved): a failure is reported and the following goes on to the run's outcome.
    /// </summary>
    public static Task RequestCancelAsync(IRunGrain grain, string runId, TextWriter errors) => RequestCancelAsync(grain.CancelAsync, runId, errors);

    public static async Task RequestCancelAsync(Func<Task> cancel, string runId, TextWriter errors)
    {
        try { await cancel(); }
        catch (Exception e)
        {
            errors.WriteLine($"shears: could not ask run {runId} to cancel ({e.GetType().Name}: {e.Message}); 'shears cancel {runId} --cluster …' will");
        }
    }

    /// <summary>
    /// Whether an exception from the status stream ends only this subscription, so that subscribing again may follow
    /// the run on. The stream breaks in more ways than <see cref="OrleansException"/> covers:
    /// <see cref="EnumerationAbortedException"/> derives from <see cref="Exception"/> itself (a coordinator that
    /// re-activated, or an activation replaced on a silo that kept running, has no record of the subscription), a
    /// remote enumeration cancelled under a deactivating coordinator surfaces as <see cref="OperationCanceledException"/>,
    /// and whatever the coordinator's side of the enumeration threw is rethrown here as it was. Only a stream this
    /// client cannot read (a cluster of another version: its serializer refuses the statuses) is not mended by
    /// subscribing again.
    /// </summary>
    public static bool IsBrokenStream(Exception e) => e is not SerializerException;

    /// <summary>
    /// The run's statuses as the coordinator streams them. When the stream breaks or falls silent (the coordinator's
    /// silo was lost) it subscribes again, which re-activates the coordinator from its persisted state.
    /// </summary>
    public static IAsyncEnumerable<RunStatus> Statuses(IRunGrain grain, RunStatus first, FollowPatience? patience = null) =>
        Statuses(() => grain.WatchAsync(), IsBrokenStream, first, patience);

    /// <summary>The statuses of <paramref name="subscribe"/>'s stream, subscribing again while <paramref name="isBroken"/> says a failure ends only the subscription.</summary>
    public static async IAsyncEnumerable<RunStatus> Statuses(Func<IAsyncEnumerable<RunStatus>> subscribe, Func<Exception, bool> isBroken, RunStatus first, FollowPatience? patience = null)
    {
        patience ??= FollowPatience.Default;
        yield return first;
        if (first.IsFinished) yield break;
        var brokenSince = (DateTime?)null;
        while (true)
        {
            // A call in flight to a silo that died is never answered; a client learns it only at the response timeout
            // (30 s by default), and the coordinator, which re-activates on the next call, waits as long. The
            // coordinator sends its status at least every few seconds, so a longer silence means a broken stream.
            using var silence = new CancellationTokenSource(patience.Silence);
            var stream = subscribe().GetAsyncEnumerator(silence.Token);
            try
            {
                while (true)
                {
                    RunStatus next;
                    try
                    {
                        if (!await stream.MoveNextAsync()) break;
                        next = stream.Current;
                        silence.CancelAfter(patience.Silence);
                        brokenSince = null;
                    }
                    catch (Exception e) when (isBroken(e))
                    {
                        brokenSince ??= DateTime.UtcNow;
                        if (DateTime.UtcNow - brokenSince > patience.GiveUp) throw new RunUnreachableException(first.RunId, patience.GiveUp, e);
                        await Task.Delay(patience.Retry);
                        break;
                    }
                    // A coordinator that re-activated without its persisted state knows nothing of the run: say so rather
                    // than follow an empty run forever.
                    if (next.Spec is null) throw new RunStateLostException(first.RunId);
                    yield return next;
                    if (next.IsFinished) yield break;
                }
            }
            finally
            {
                // Tells the coordinator to drop the subscription. A courtesy only: one that is gone has nothing to drop, and
                // a call to a dead silo must not hold the following up for the response timeout.
                try { await stream.DisposeAsync().AsTask().WaitAsync(patience.Silence); }
                catch (Exception e) when (isBroken(e)) { }
            }
        }
    }

    private static async Task<RunStatus> FollowPlain(IAsyncEnumerable<RunStatus> statuses, RunStatus status, CancellationToken token)
    {
        string last = "";
        int printedRounds = 0, recoveries = 0;
        Console.WriteLine($"run {status.RunId}: {status.PrunableWeights:N0} prunable weights on {status.Shards} shards");
        await foreach (var current in statuses)
        {
            status = current;
            if (status.Phase != last)
            {
                Console.WriteLine($"run {status.RunId}: {status.Phase}");
                last = status.Phase;
            }
            for (; printedRounds < status.Rounds.Count; printedRounds++)
                Console.WriteLine(RunView.RoundLine(status.Rounds[printedRounds], status.TotalRounds));
            if (status.Recoveries > recoveries)
            {
                recoveries = status.Recoveries;
                Console.WriteLine($"run {status.RunId}: lost a shard or silo; resumed from round {status.Rounds.Count} (recovery {recoveries})");
            }
        }
        return status;
    }

    private static async Task<RunStatus> FollowLive(IAsyncEnumerable<RunStatus> statuses, RunStatus status, CancellationToken token)
    {
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                var rounds = context.AddTask("rounds", maxValue: Math.Max(1, status.TotalRounds));
                var sparsity = context.AddTask("sparsity", maxValue: 1.0);
                await foreach (var current in statuses)
                {
                    status = current;
                    rounds.Description = status.Recoveries > 0 ? $"{status.Phase} (recovered {status.Recoveries}×)" : status.Phase;
                    rounds.Value = status.Rounds.Count;
                    sparsity.Value = status.Rounds.Count > 0 ? status.Rounds[^1].AchievedSparsity : 0;
                    sparsity.Description = string.Create(CultureInfo.InvariantCulture, $"sparsity → {status.Spec?.Sparsity:P1}");
                }
                rounds.StopTask();
                sparsity.StopTask();
            });
        return status;
    }
}

/// <summary>The run's coordinator answers without the run's state (its store lost it): nothing more can be followed.</summary>
public sealed class RunStateLostException(string runId)
    : Exception($"run {runId}: its coordinator came back without the run's state (the cluster's state store lost it); the run cannot go on, start it again");

/// <summary>The coordinator could not be reached for longer than the follower waits: the run may still be going on.</summary>
public sealed class RunUnreachableException(string runId, TimeSpan waited, Exception last)
    : Exception($"run {runId}: no status from its coordinator for {(waited.TotalMinutes >= 1 ? $"{waited.TotalMinutes:0.#} minutes" : $"{waited.TotalSeconds:0.#} seconds")} "
        + $"(last: {last.GetType().Name}: {last.Message}); the run may still be going on: 'shears status {runId} --cluster …' tells", last);

/// <summary>How long the follower waits on a broken status stream: before subscribing again, for a silent stream, and in all.</summary>
public sealed record FollowPatience(TimeSpan Retry, TimeSpan Silence, TimeSpan GiveUp)
{
    /// <summary>The coordinator sends its status at least every 5 seconds: three missed count as a silent stream.</summary>
    public static readonly FollowPatience Default = new(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(15), TimeSpan.FromMinutes(5));
}
