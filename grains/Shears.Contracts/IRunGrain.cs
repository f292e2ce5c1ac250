namespace Shears.Contracts;

/// <summary>
/// The coordinator of one run, keyed by run id. Calls return at once; the run proceeds in the
/// background and clients poll <see cref="GetStatusAsync"/>.
/// </summary>
public interface IRunGrain : IGrainWithStringKey
{
    /// <summary>Validates the spec and the checkpoint's manifest, then starts the run. Throws <see cref="RunRejectedException"/> on bad input.</summary>
    Task<RunStatus> StartAsync(RunSpec spec);

    Task<RunStatus> GetStatusAsync();

    /// <summary>The run's status now and after every change, until it finishes (a stream, not polling).</summary>
    IAsyncEnumerable<RunStatus> WatchAsync(CancellationToken cancellationToken = default);

    Task<RunStatus> CancelAsync();

    /// <summary>The report JSON (shears-report.json) once the run has finished, else null.</summary>
    Task<string?> GetReportJsonAsync();

    /// <summary>The run's shards and the silos holding them, once they are loaded (empty before).</summary>
    Task<IReadOnlyList<ShardResult>> GetShardsAsync();
}

/// <summary>Lists the runs this cluster has seen.</summary>
public interface IRunRegistryGrain : IGrainWithIntegerKey
{
    Task RegisterAsync(string runId);
    Task<IReadOnlyList<string>> ListAsync();
}

/// <summary>Raised when a run cannot start: the message names the file, tensor or option at fault.</summary>
[GenerateSerializer]
public sealed class RunRejectedException : Exception
{
    public RunRejectedException(string message) : base(message) { }
}
