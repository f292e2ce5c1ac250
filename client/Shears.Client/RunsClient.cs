using Shears.Contracts;

namespace Shears.Client;

/// <summary>
/// What the commands ask of a cluster, whichever way they reach it: through an Orleans client (a silo in this process,
/// gateways, or Redis: <see cref="OrleansRuns"/>) or over a silo's HTTP port (<see cref="HttpRuns"/>, which loads no
/// Orleans client at all).
/// </summary>
public interface IRunsClient : IAsyncDisposable
{
    /// <summary>Starts the run (or answers for the one already started under this id). Throws <see cref="RunRejectedException"/> on bad input.</summary>
    Task<RunStatus> StartAsync(string runId, RunSpec spec);

    /// <summary>The run's status; one without a <see cref="RunStatus.Spec"/> for a run the cluster does not know.</summary>
    Task<RunStatus> GetStatusAsync(string runId);

    /// <summary>The run's status now and after every change, until it finishes.</summary>
    IAsyncEnumerable<RunStatus> WatchAsync(string runId, CancellationToken cancellationToken = default);

    Task<RunStatus> CancelAsync(string runId);

    Task<string?> GetReportJsonAsync(string runId);

    Task<IReadOnlyList<RunListing>> ListAsync();

    /// <summary>Whether an exception from <see cref="WatchAsync"/> ends only that subscription (subscribing again may go on).</summary>
    bool IsBrokenStream(Exception e);

    /// <summary>Whether an exception is the cluster's failing to answer (printed as an error, not a crash).</summary>
    bool IsClusterError(Exception e);
}

/// <summary>One line of `shears list`.</summary>
public sealed record RunListing(string RunId, string State, string Phase, string? Model);

/// <summary>The cluster named by --cluster could not be reached or did not answer as a Shears silo does.</summary>
public sealed class ClusterUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

public static class RunsClient
{
    /// <summary>The client for --cluster: http(s):// is a silo's HTTP port, anything else (or nothing) an Orleans client.</summary>
    public static async Task<IRunsClient> OpenAsync(ClusterTarget target, CancellationToken token) =>
        target.Http ? HttpRuns.Open(target) : await OrleansRuns.OpenAsync(target, token);
}
