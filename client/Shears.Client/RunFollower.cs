using System.Globalization;
using Shears.Contracts;
using Spectre.Console;

namespace Shears.Client;

/// <summary>Starts a run and follows it to the end: live bars and tables in a terminal, plain lines otherwise.</summary>
public static class RunFollower
{
    public static async Task<int> RunAsync(string? cluster, RunSpec spec, string runId, bool detach, CancellationToken token)
    {
        ClusterConnection connection;
        try { connection = await ClusterConnection.OpenAsync(cluster, token); }
        catch (Exception e) when (e is ArgumentException or OrleansException or TimeoutException)
        {
            return Commands.Fail([$"cannot reach the cluster: {e.Message}"]);
        }
        await using var owned = connection;
        var grain = connection.Client.GetGrain<IRunGrain>(runId);
        RunStatus status;
        try { status = await grain.StartAsync(spec); }
        catch (RunRejectedException e) { return Commands.Fail([e.Message]); }
        if (detach)
        {
            Console.WriteLine(runId);
            return Commands.Ok;
        }

        using var cancelRegistration = token.Register(() => { _ = grain.CancelAsync(); });
        try
        {
            status = Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive
                ? await FollowPlain(grain, status, token)
                : await FollowLive(grain, status, token);
        }
        catch (RunStateLostException e)
        {
            Console.Error.WriteLine($"shears: {e.Message}");
            return Commands.RunFailed;
        }

        switch (status.State)
        {
            case RunState.Completed:
                RunView.PrintRounds(status);
                Console.WriteLine($"wrote {spec.OutputPath} (run {runId})");
                return Commands.Ok;
            case RunState.Cancelled:
                Console.Error.WriteLine($"shears: run {runId} was cancelled; nothing was written to {spec.OutputPath}");
                return Commands.RunFailed;
            default:
                Console.Error.WriteLine($"shears: run {runId} failed: {status.Error}");
                return Commands.RunFailed;
        }
    }

    /// <summary>
    /// The run's statuses as the coordinator streams them. When the stream breaks (the coordinator's
    /// silo was lost) it subscribes again, which re-activates the coordinator from its persisted state.
    /// </summary>
    public static async IAsyncEnumerable<RunStatus> Statuses(IRunGrain grain, RunStatus first)
    {
        yield return first;
        if (first.IsFinished) yield break;
        var brokenSince = (DateTime?)null;
        while (true)
        {
            var stream = grain.WatchAsync().GetAsyncEnumerator();
            try
            {
                while (true)
                {
                    RunStatus? next = null;
                    try
                    {
                        if (!await stream.MoveNextAsync()) break;
                        next = stream.Current;
                        brokenSince = null;
                    }
                    catch (Exception e) when (e is OrleansException or TimeoutException)
                    {
                        brokenSince ??= DateTime.UtcNow;
                        if (DateTime.UtcNow - brokenSince > TimeSpan.FromMinutes(5)) throw;
                        await Task.Delay(1000);
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
                try { await stream.DisposeAsync(); } catch (Exception e) when (e is OrleansException or TimeoutException) { }
            }
        }
    }

    private static async Task<RunStatus> FollowPlain(IRunGrain grain, RunStatus status, CancellationToken token)
    {
        string last = "";
        int printedRounds = 0, recoveries = 0;
        Console.WriteLine($"run {status.RunId}: {status.PrunableWeights:N0} prunable weights on {status.Shards} shards");
        await foreach (var current in Statuses(grain, status))
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

    private static async Task<RunStatus> FollowLive(IRunGrain grain, RunStatus status, CancellationToken token)
    {
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                var rounds = context.AddTask("rounds", maxValue: Math.Max(1, status.TotalRounds));
                var sparsity = context.AddTask("sparsity", maxValue: 1.0);
                await foreach (var current in Statuses(grain, status))
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
