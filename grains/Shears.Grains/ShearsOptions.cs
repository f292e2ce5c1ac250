namespace Shears.Grains;

/// <summary>Per-silo settings, bound from the configuration section "Shears".</summary>
public sealed class ShearsOptions
{
    public const string SectionName = "Shears";

    /// <summary>auto (CUDA when built in and present, else CPU), cpu, or cuda[:N].</summary>
    public string Device { get; set; } = "auto";

    /// <summary>Threads of the compute executor; 0 means one per core.</summary>
    public int ComputeThreads { get; set; }

    /// <summary>Folders model and output paths must lie in; empty allows any path.</summary>
    public List<string> DataRoots { get; set; } = [];

    /// <summary>What this silo does: worker (holds shards), coordinator (runs only), or all.</summary>
    public string Role { get; set; } = "all";

    /// <summary>
    /// Bytes of shard memory this silo may be given (--memory-budget); 0: <see cref="Placement.ShardBudgets.DefaultFraction"/>
    /// of the memory the process may use. Runs place their shards within the silos' budgets and are refused when they cannot.
    /// </summary>
    public long MemoryBudget { get; set; }

    /// <summary>
    /// Pieces of at least this many elements keep their selection histograms (512 KiB each) for the round, so that
    /// counting at the threshold and masking need no further pass over their weights; smaller pieces count again.
    /// </summary>
    public long CachedHistogramElements { get; set; } = 1 << 20;

    /// <summary>
    /// How many times a run reloads its shards and retries a step interrupted by a lost shard, silo or time-out before
    /// the run fails with the step's error.
    /// </summary>
    public int MaxRecoveries { get; set; } = 3;

    /// <summary>
    /// How long a call to a shard waits for its work (which queues for the silo's compute executor) before it answers
    /// with a ticket the coordinator polls.
    /// </summary>
    public TimeSpan ShardCallWait { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How often an unfinished run's reminder calls its coordinator, which re-activates it on another silo when its own
    /// was lost: at most this long after the cluster notices. Below a minute it lowers Orleans' ReminderOptions.MinimumReminderPeriod.
    /// </summary>
    public TimeSpan ResumeCheckPeriod { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How long a finished run's per-run and per-round metric series stay on a silo's /metrics before they are dropped
    /// (they bound the series a silo serves to the runs of this period).
    /// </summary>
    public TimeSpan MetricsRetention { get; set; } = TimeSpan.FromHours(1);
}
