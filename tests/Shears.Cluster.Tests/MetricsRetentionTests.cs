using System.Diagnostics.Metrics;
using Shears.Contracts;
using Shears.Grains.Diagnostics;

namespace Shears.Cluster.Tests;

/// <summary>The per-round series: one per run and round while the run goes, kept after it ends, dropped after the retention.</summary>
public class MetricsRetentionTests
{
    private sealed class MovableClock : TimeProvider
    {
        public TimeSpan Offset { get; set; }
        public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + Offset;
    }

    /// <summary>The (round, value) series of one run that a scrape of <paramref name="instrument"/> would see now.</summary>
    private static Dictionary<string, double> Scrape(string instrument, string run)
    {
        var seen = new Dictionary<string, double>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == ShearsMetrics.MeterName && i.Name == instrument) l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<double>((_, value, tags, _) =>
        {
            var labels = tags.ToArray().ToDictionary(t => t.Key, t => t.Value?.ToString());
            if (labels.GetValueOrDefault("run") == run) seen[labels["round"]!] = value;
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return seen;
    }

    [Fact]
    public void ACoordinatorResumedOnAnotherSiloServesTheRoundsFinishedBefore()
    {
        string run = "resumed-" + Guid.NewGuid().ToString("N")[..8];
        var rounds = Enumerable.Range(1, 3).Select(r => new RoundResult { Round = r, TargetSparsity = r / 10.0, AchievedSparsity = r / 10.0 }).ToArray();
        ShearsMetrics.RoundsResumed(run, new EvalMetric { Metric = "perplexity", Value = 9.5 }, rounds);
        var achieved = Scrape("shears_round_achieved_sparsity", run);
        Assert.Equal(new[] { "1", "2", "3" }, achieved.Keys.Order());
        Assert.Equal(0.3, achieved["3"]);
        Assert.Equal(9.5, Assert.Single(Scrape("shears_round_eval", run)).Value);
        Assert.Empty(Scrape("shears_round_threshold", run)); // layer-wise rounds have none
    }

    [Fact]
    public void EveryRoundStaysUntilTheRetentionAfterTheRunEnds()
    {
        string run = "retention-" + Guid.NewGuid().ToString("N")[..8];
        var clock = new MovableClock();
        var before = ShearsMetrics.Clock;
        ShearsMetrics.Clock = clock;
        try
        {
            ShearsMetrics.Baseline(run, 12.5);
            for (int round = 1; round <= 20; round++)
                ShearsMetrics.RoundFinished(run, new RoundResult
                {
                    Round = round, TargetSparsity = round / 40.0, AchievedSparsity = round / 40.0, Threshold = round * 0.001, Seconds = 0.01,
                    Eval = new EvalMetric { Metric = "perplexity", Value = 12.5 + round },
                });
            var achieved = Scrape("shears_round_achieved_sparsity", run);
            Assert.Equal(20, achieved.Count);
            Assert.Equal(0.5, achieved["20"]);
            Assert.Equal(0.025, achieved["1"]);
            var eval = Scrape("shears_round_eval", run);
            Assert.Equal(21, eval.Count);
            Assert.Equal(12.5, eval["0"]);
            Assert.Equal(32.5, eval["20"]);
            Assert.Empty(Scrape("shears_round_finetune_loss", run)); // no fine-tuning, no series

            ShearsMetrics.RunFinished(run, TimeSpan.FromMinutes(10));
            clock.Offset = TimeSpan.FromMinutes(9);
            Assert.Equal(20, Scrape("shears_round_threshold", run).Count);
            clock.Offset = TimeSpan.FromMinutes(11);
            Assert.Empty(Scrape("shears_round_threshold", run));
            Assert.Empty(Scrape("shears_round_achieved_sparsity", run));
            Assert.Empty(Scrape("shears_round_eval", run));
        }
        finally
        {
            ShearsMetrics.Clock = before;
        }
    }
}
