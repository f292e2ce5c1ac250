using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using Shears.Contracts;

namespace Shears.Grains.Diagnostics;

/// <summary>
/// The "Shears" meter. The shears_run_* gauges report the latest value seen on this silo for each run; the
/// shears_round_* gauges keep one series per run and round, so that a scraper misses no round however short; counters
/// and histograms accumulate. A finished run's series are dropped <see cref="ShearsOptions.MetricsRetention"/> after it
/// finished. Names are listed in the README.
/// </summary>
public static class ShearsMetrics
{
    public const string MeterName = "Shears";
    public static readonly Meter Meter = new(MeterName, "1.0");

    private sealed record RunGauges(int Round, double Target, double Achieved, double? Threshold, double? Eval);
    private static readonly ConcurrentDictionary<string, RunGauges> Runs = new();
    private static readonly ConcurrentDictionary<(string Run, string Shard), long> ShardMasked = new();
    private static readonly ConcurrentDictionary<(string Run, string State), int> RunStates = new();
    /// <summary>Every finished round of the runs this silo coordinates; round 0 holds the dense model's evaluation.</summary>
    private static readonly ConcurrentDictionary<(string Run, int Round), RoundResult> Rounds = new();
    private static readonly ConcurrentDictionary<string, double> Baselines = new();
    /// <summary>When each unfinished run coordinated here last moved on (a phase or a round), in Unix seconds.</summary>
    private static readonly ConcurrentDictionary<string, double> Progress = new();
    /// <summary>When each finished run's series are dropped.</summary>
    private static readonly ConcurrentDictionary<string, DateTimeOffset> Expiries = new();

    /// <summary>The clock that expires finished runs' series (tests move it).</summary>
    public static TimeProvider Clock { get; set; } = TimeProvider.System;

    public static readonly Counter<long> RunsFinished = Meter.CreateCounter<long>("shears_runs_total", description: "Runs that reached a final status, by status");
    public static readonly Counter<long> RunsRefused = Meter.CreateCounter<long>("shears_runs_refused_total", description: "Runs refused before they started (bad options, paths or checkpoints)");
    public static readonly Counter<long> BytesRead = Meter.CreateCounter<long>("shears_bytes_read", "By", "Checkpoint bytes read by shard grains");
    public static readonly Counter<long> BytesWritten = Meter.CreateCounter<long>("shears_bytes_written", "By", "Output bytes written by shard grains");
    public static readonly Counter<long> SelectionBytes = Meter.CreateCounter<long>("shears_selection_bytes", "By", "Bytes exchanged between coordinator and shards for selection");
    private static readonly InstrumentAdvice<double> SecondsBuckets = new() { HistogramBucketBoundaries = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600] };
    public static readonly Histogram<double> RoundSeconds = Meter.CreateHistogram("shears_round_seconds", "s", "Duration of pruning rounds", tags: null, advice: SecondsBuckets);
    public static readonly Histogram<double> PhaseSeconds = Meter.CreateHistogram("shears_phase_seconds", "s", "Duration of run phases (load, export)", tags: null, advice: SecondsBuckets);

    static ShearsMetrics()
    {
        Meter.CreateObservableGauge("shears_run_round", () => Live(Runs).Select(r => new Measurement<int>(r.Value.Round, Tag("run", r.Key))), description: "Current round of each run");
        Meter.CreateObservableGauge("shears_run_target_sparsity", () => Live(Runs).Select(r => new Measurement<double>(r.Value.Target, Tag("run", r.Key))), description: "Target sparsity of the current round");
        Meter.CreateObservableGauge("shears_run_achieved_sparsity", () => Live(Runs).Select(r => new Measurement<double>(r.Value.Achieved, Tag("run", r.Key))), description: "Achieved sparsity after the latest round");
        Meter.CreateObservableGauge("shears_run_threshold", () => Live(Runs).Where(r => r.Value.Threshold.HasValue).Select(r => new Measurement<double>(r.Value.Threshold!.Value, Tag("run", r.Key))), description: "Global score threshold of the latest round");
        Meter.CreateObservableGauge("shears_run_eval", () => Live(Runs).Where(r => r.Value.Eval.HasValue).Select(r => new Measurement<double>(r.Value.Eval!.Value, Tag("run", r.Key))), description: "Evaluation metric after the latest round");
        Meter.CreateObservableGauge("shears_shard_masked_weights", () => Live(ShardMasked, k => k.Run).Select(s => new Measurement<long>(s.Value, Tag("run", s.Key.Run), Tag("shard", s.Key.Shard))), description: "Masked weights held by each shard");
        Meter.CreateObservableGauge("shears_run_states", () => RunStates.GroupBy(r => r.Key.State).Select(g => new Measurement<int>(g.Count(), Tag("status", g.Key))), description: "Runs known to this silo, by status");
        Meter.CreateObservableGauge("shears_run_progress_timestamp_seconds", () => Progress.Select(p => new Measurement<double>(p.Value, Tag("run", p.Key))), "s",
            "When each unfinished run coordinated by this silo last began a phase or a round (Unix time)");

        RoundGauge("shears_round_target_sparsity", r => r.TargetSparsity, "Target sparsity of each finished round");
        RoundGauge("shears_round_achieved_sparsity", r => r.AchievedSparsity, "Achieved sparsity after each finished round");
        RoundGauge("shears_round_threshold", r => r.Threshold, "Global score threshold of each finished round (global scope)");
        RoundGauge("shears_round_finetune_loss", r => r.FinetuneLoss, "Mean fine-tuning loss of each finished round");
        RoundGauge("shears_round_duration_seconds", r => r.Seconds, "Duration of each finished round", "s");
        Meter.CreateObservableGauge("shears_round_eval", () => Live(Baselines).Select(b => RoundMeasurement(b.Value, b.Key, 0))
                .Concat(Live(Rounds, k => k.Run).Where(r => r.Value.Eval is not null).Select(r => RoundMeasurement(r.Value.Eval!.Value, r.Key.Run, r.Key.Round))),
            description: "Evaluation metric after each finished round; round 0 is the dense model");

        Meter.CreateObservableGauge("shears_silo_memory_working_set_bytes", () => Environment.WorkingSet, "By", "Physical memory this silo's process uses");
        Meter.CreateObservableGauge("shears_silo_memory_limit_bytes", () => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, "By",
            "Memory available to this silo's process (its container's limit, or the machine's memory)");

        // Zero-valued series from the start, so that increase() sees the first failure or refusal of a silo.
        foreach (var status in new[] { "completed", "failed", "cancelled" }) RunsFinished.Add(0, Tag("status", status));
        RunsRefused.Add(0);
    }

    private static void RoundGauge(string name, Func<RoundResult, double?> value, string description, string? unit = null) =>
        Meter.CreateObservableGauge(name, () => Live(Rounds, k => k.Run).Where(r => value(r.Value).HasValue).Select(r => RoundMeasurement(value(r.Value)!.Value, r.Key.Run, r.Key.Round)),
            unit, description);

    private static Measurement<double> RoundMeasurement(double value, string run, int round) =>
        new(value, Tag("run", run), Tag("round", round.ToString(CultureInfo.InvariantCulture)));

    private static IEnumerable<KeyValuePair<string, T>> Live<T>(ConcurrentDictionary<string, T> series) => Live(series, k => k);

    /// <summary>The series of runs not yet expired; those of expired runs are dropped on the way.</summary>
    private static IEnumerable<KeyValuePair<TKey, T>> Live<TKey, T>(ConcurrentDictionary<TKey, T> series, Func<TKey, string> run) where TKey : notnull
    {
        var now = Clock.GetUtcNow();
        foreach (var entry in series)
        {
            if (Expiries.TryGetValue(run(entry.Key), out var expiry) && expiry <= now) series.TryRemove(entry.Key, out _);
            else yield return entry;
        }
    }

    public static KeyValuePair<string, object?> Tag(string key, object? value) => new(key, value);

    public static void RunState(string runId, string state) => RunStates[(runId, state.ToLowerInvariant())] = 1;

    public static void ClearRunState(string runId)
    {
        foreach (var key in RunStates.Keys.Where(k => k.Run == runId)) RunStates.TryRemove(key, out _);
    }

    /// <summary>The run moved on (a phase or round began): what the round-stalled alert watches.</summary>
    public static void Progressed(string runId) => Progress[runId] = Clock.GetUtcNow().ToUnixTimeMilliseconds() / 1000.0;

    public static void RoundStarted(string runId, int round, double target)
    {
        Runs.AddOrUpdate(runId, _ => new RunGauges(round, target, 0, null, null), (_, g) => g with { Round = round, Target = target });
        Progressed(runId);
    }

    /// <summary>The coordinator's record of a finished round: its series, the latest-round gauges and the duration histogram.</summary>
    public static void RoundFinished(string runId, RoundResult result)
    {
        Rounds[(runId, result.Round)] = result;
        RoundGauges(runId, result.Round, result.TargetSparsity, result.AchievedSparsity, result.Threshold);
        RoundSeconds.Record(result.Seconds, Tag("run", runId));
        if (result.Eval is { } measured) Eval(runId, measured.Value);
        Progressed(runId);
    }

    /// <summary>A coordinator resumed on this silo serves the rounds its run finished elsewhere (nothing is recorded twice).</summary>
    public static void RoundsResumed(string runId, EvalMetric? baseline, IEnumerable<RoundResult> rounds)
    {
        if (baseline is not null) Baselines[runId] = baseline.Value;
        foreach (var round in rounds) Rounds[(runId, round.Round)] = round;
    }

    /// <summary>Gauges only: every silo holding shards of the run shows its rounds too.</summary>
    public static void RoundGauges(string runId, int round, double target, double achieved, double? threshold) =>
        Runs[runId] = new RunGauges(round, target, achieved, threshold, Runs.TryGetValue(runId, out var g) ? g.Eval : null);

    /// <summary>The dense model's evaluation, before round 1.</summary>
    public static void Baseline(string runId, double value)
    {
        Baselines[runId] = value;
        Eval(runId, value);
    }

    public static void Eval(string runId, double value) =>
        Runs.AddOrUpdate(runId, _ => new RunGauges(0, 0, 0, null, value), (_, g) => g with { Eval = value });

    public static void Shard(string runId, string shard, long masked) => ShardMasked[(runId, shard)] = masked;

    /// <summary>The run ended (or this silo's part in it): its series stay for <paramref name="retention"/>, then go.</summary>
    public static void RunFinished(string runId, TimeSpan retention)
    {
        Progress.TryRemove(runId, out _);
        Expiries[runId] = Clock.GetUtcNow() + retention;
        // Runs expired long ago need no entry either: the list stays as long as the runs of the last retention period.
        var now = Clock.GetUtcNow();
        foreach (var (run, expiry) in Expiries)
            if (expiry + retention < now && run != runId) Purge(run);
    }

    private static void Purge(string runId)
    {
        Runs.TryRemove(runId, out _);
        Baselines.TryRemove(runId, out _);
        foreach (var key in ShardMasked.Keys.Where(k => k.Run == runId)) ShardMasked.TryRemove(key, out _);
        foreach (var key in Rounds.Keys.Where(k => k.Run == runId)) Rounds.TryRemove(key, out _);
        Expiries.TryRemove(runId, out _);
    }
}
