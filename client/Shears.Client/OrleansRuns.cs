using Shears.Contracts;

namespace Shears.Client;

/// <summary>The commands' cluster through an Orleans client: the embedded silo, gateways or Redis; each request one grain call.</summary>
public sealed class OrleansRuns : IRunsClient
{
    private readonly ClusterConnection _connection;

    private OrleansRuns(ClusterConnection connection) => _connection = connection;

    public static async Task<IRunsClient> OpenAsync(ClusterTarget target, CancellationToken token)
    {
        try { return new OrleansRuns(await ClusterConnection.OpenAsync(target, token)); }
        catch (OrleansException e) { throw new ClusterUnavailableException(e.Message, e); }
    }

    private IRunGrain Run(string runId) => _connection.Client.GetGrain<IRunGrain>(runId);

    public Task<RunStatus> StartAsync(string runId, RunSpec spec) => Run(runId).StartAsync(spec);

    public Task<RunStatus> GetStatusAsync(string runId) => Run(runId).GetStatusAsync();

    public IAsyncEnumerable<RunStatus> WatchAsync(string runId, CancellationToken cancellationToken = default) => Run(runId).WatchAsync(cancellationToken);

    public Task<RunStatus> CancelAsync(string runId) => Run(runId).CancelAsync();

    public Task<string?> GetReportJsonAsync(string runId) => Run(runId).GetReportJsonAsync();

    public async Task<IReadOnlyList<RunListing>> ListAsync()
    {
        var lines = new List<RunListing>();
        foreach (string id in await _connection.Client.GetGrain<IRunRegistryGrain>(0).ListAsync())
        {
            var status = await Run(id).GetStatusAsync();
            lines.Add(new RunListing(id, status.State.ToString().ToLowerInvariant(), status.Phase, status.Spec?.ModelPath));
        }
        return lines;
    }

    public bool IsBrokenStream(Exception e) => RunFollower.IsBrokenStream(e);

    public bool IsClusterError(Exception e) => e is OrleansException;

    public ValueTask DisposeAsync() => _connection.DisposeAsync();
}
