using Microsoft.Extensions.Logging;
using Orleans.Storage;

namespace Shears.Grains.Runs;

// Writing the run's state through a storage that may be briefly out of reach.
public sealed partial class RunGrain
{
    /// <summary>How long a state write is retried while the storage (Redis, a shared folder) cannot be reached.</summary>
    internal static readonly TimeSpan StorageOutage = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Writes the run's state. A write that fails — Redis unreachable for a few seconds, a timeout — is retried with
    /// growing pauses for up to <see cref="StorageOutage"/>, so that a gap in the storage costs the run a pause, not the
    /// run. A write that timed out may still have been applied: the retry then meets the stored version's newer ETag,
    /// which only this activation writes, so the ETag is read back and the same state written again.
    /// </summary>
    private async Task SaveStateAsync()
    {
        var started = DateTime.UtcNow;
        var pause = TimeSpan.FromMilliseconds(250);
        bool retrying = false;
        while (true)
        {
            try
            {
                await state.WriteStateAsync();
                if (retrying) logger.LogWarning("Run {Run}: its state was written after {Seconds:F1} s of storage errors", RunId, (DateTime.UtcNow - started).TotalSeconds);
                return;
            }
            catch (InconsistentStateException) when (retrying && DateTime.UtcNow - started < StorageOutage)
            {
                var wanted = state.State;
                await state.ReadStateAsync();
                state.State = wanted;
            }
            catch (Exception e) when (e is not InconsistentStateException && DateTime.UtcNow - started < StorageOutage)
            {
                if (!retrying) logger.LogWarning(e, "Run {Run}: writing its state failed; retrying for up to {Limit}", RunId, StorageOutage);
                retrying = true;
                await Task.Delay(pause);
                pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(5).Ticks));
            }
        }
    }
}
