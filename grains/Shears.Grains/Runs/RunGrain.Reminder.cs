using Microsoft.Extensions.Logging;

namespace Shears.Grains.Runs;

/// <summary>
/// The reminder that keeps an unfinished run going without a client. A coordinator lost with its silo resumes only
/// when something activates it again; the reminder, kept by the cluster's reminder service rather than by any one
/// silo, calls it every <see cref="ShearsOptions.ResumeCheckPeriod"/>, and that call re-activates it elsewhere
/// (<see cref="OnActivateAsync"/> resumes the run). The reminder is registered when the run starts and removed when
/// it ends, however it ends.
/// </summary>
public sealed partial class RunGrain : IRemindable
{
    internal const string KeepRunningReminder = "keep-running";

    /// <summary>Registers the reminder; a failure refuses the run, which could otherwise stall unseen after a lost silo.</summary>
    private Task KeepRunningAsync() =>
        this.RegisterOrUpdateReminder(KeepRunningReminder, options.Value.ResumeCheckPeriod, options.Value.ResumeCheckPeriod);

    /// <summary>
    /// A resumed run registers its reminder again if it has none (a run started before reminders were kept, or a
    /// reminder store that lost it). A reminder service that cannot answer does not stop the resumption.
    /// </summary>
    private async Task EnsureKeepRunningAsync()
    {
        try
        {
            if (await this.GetReminder(KeepRunningReminder) is null) await KeepRunningAsync();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogWarning("Run {Run}: cannot register its reminder ({Error}); it resumes only on a client's call if this silo is lost", RunId, e.Message);
        }
    }

    /// <summary>Removes the reminder of a finished run. A failure leaves it to the next tick, which removes it.</summary>
    private async Task StopKeepingRunningAsync()
    {
        try
        {
            if (await this.GetReminder(KeepRunningReminder) is { } reminder) await this.UnregisterReminder(reminder);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogWarning("Run {Run}: cannot remove its reminder yet ({Error}); its next tick will", RunId, e.Message);
        }
    }

    Task IRemindable.ReceiveReminder(string reminderName, TickStatus status)
    {
        // Being called is the point: the call activated this grain if its silo was lost, and activation resumed the
        // run. A run that has ended (or whose state is gone, so it can never resume) needs no more calls.
        if (reminderName == KeepRunningReminder && state.State.Status is not { IsFinished: false })
            return StopKeepingRunningAsync();
        return Task.CompletedTask;
    }
}
