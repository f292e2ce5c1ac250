using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace Shears.Grains.Diagnostics;

/// <summary>
/// The "Shears" meter. Gauges report the latest value seen on this silo for each run; counters and
/// histograms accumulate. Names are listed in the README.
/// </summary>
public static class ShearsMetrics
{
    public const string MeterName = "Shears";
    public static readonly Meter Meter = new(MeterName, "1.0");

    private sealed record RunGauges(int Round, double Target, double Achieved, double? Threshold, double? Eval);
    private static readonly ConcurrentDictionary<string, RunGauges> Runs = new();
    private static readonly ConcurrentDictionary<(string Run, string Shard), long> ShardMasked = new();
    private static readonly ConcurrentDictionary<(string Run, string State), int> RunStates = new();

    public static readonly Counter<long> RunsFinished = Meter.CreateCounter<long>("shears_runs_total", description: "Runs that reached a final status, by status");
    public static readonly Counter<long> BytesRead = Meter.CreateCounter<long>("shears_bytes_read", "By", "Checkpoint bytes read by shard grains");
    public static readonly Counter<long> BytesWritten = Meter.CreateCounter<long>("shears_bytes_written", "By", "Output bytes written by shard grains");
    public static readonly Counter<long> SelectionBytes = Meter.CreateCounter<long>("shears_selection_bytes", "By", "Bytes exchanged between coordinator and shards for selection");
    private static readonly InstrumentAdvice<double> SecondsBuckets = new() { HistogramBucketBoundaries = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600] };
    public static readonly Histogram<double> RoundSeconds = Meter.CreateHistogram("shears_round_seconds", "s", "Duration of pruning rounds", tags: null, advice: SecondsBuckets);
    public static readonly Histogram<double> PhaseSeconds = Meter.CreateHistogram("shears_phase_seconds", "s", "Duration of run phases (load, export)", tags: null, advice: SecondsBuckets);

    static ShearsMetrics()
    {
        Meter.CreateObservableGauge("shears_run_round", () => Runs.Select(r => new Measurement<int>(r.Value.Round, Tag("run", r.Key))), description: "Current round of each run");
        Meter.CreateObservableGauge("shears_run_target_sparsity", () => Runs.Select(r => new Measurement<double>(r.Value.Target, Tag("run", r.Key))), description: "Target sparsity of the current round");
        Meter.CreateObservableGauge("shears_run_achieved_sparsity", () => Runs.Select(r => new Measurement<double>(r.Value.Achieved, Tag("run", r.Key))), description: "Achieved sparsity after the latest round");
        Meter.CreateObservableGauge("shears_run_threshold", () => Runs.Where(r => r.Value.Threshold.HasValue).Select(r => new Measurement<double>(r.Value.Threshold!.Value, Tag("run", r.Key))), description: "Global score threshold of the latest round");
        Meter.CreateObservableGauge("shears_run_eval", () => Runs.Where(r => r.Value.Eval.HasValue).Select(r => new Measurement<double>(r.Value.Eval!.Value, Tag("run", r.Key))), description: "Evaluation metric after the latest round");
        Meter.CreateObservableGauge("shears_shard_masked_weights", () => ShardMasked.Select(s => new Measurement<long>(s.Value, Tag("run", s.Key.Run), Tag("shard", s.Key.Shard))), description: "Masked weights held by each shard");
        Meter.CreateObservableGauge("shears_run_states", () => RunStates.GroupBy(r => r.Key.State).Select(g => new Measurement<int>(g.Count(), Tag("status", g.Key))), description: "Runs known to this silo, by status");
    }

    public static KeyValuePair<string, object?> Tag(string key, object? value) => new(key, value);

    public static void RunState(string runId, string state) => RunStates[(runId, state.ToLowerInvariant())] = 1;

    public static void ClearRunState(string runId)
    {
        foreach (var key in RunStates.Keys.Where(k => k.Run == runId)) RunStates.TryRemove(key, out _);
    }

    public static void RoundStarted(string runId, int round, double target) =>
        Runs.AddOrUpdate(runId, _ => new RunGauges(round, target, 0, null, null), (_, g) => g with { Round = round, Target = target });

    /// <summary>The coordinator's record of a finished round: gauges and the duration histogram.</summary>
    public static void RoundFinished(string runId, int round, double target, double achieved, double? threshold, double seconds)
    {
        RoundGauges(runId, round, target, achieved, threshold);
        RoundSeconds.Record(seconds, Tag("run", runId));
    }

    /// <summary>Gauges only: every silo holding shards of the run shows its rounds too.</summary>
    public static void RoundGauges(string runId, int round, double target, double achieved, double? threshold) =>
        Runs[runId] = new RunGauges(round, target, achieved, threshold, Runs.TryGetValue(runId, out var g) ? g.Eval : null);

    public static void Eval(string runId, double value) =>
        Runs.AddOrUpdate(runId, _ => new RunGauges(0, 0, 0, null, value), (_, g) => g with { Eval = value });

    public static void Shard(string runId, string shard, long masked) => ShardMasked[(runId, shard)] = masked;
}
