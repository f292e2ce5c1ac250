using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Shears.Grains.Diagnostics;

/// <summary>
/// The longest call this silo has served, per run and grain method: the measure that shows whether calls stay short
/// (well under Orleans' response timeout) whatever the model's width and number of layers. Served as the gauge
/// shears_grain_call_longest_seconds and, for the coordinator's silo, in the run's report.
/// </summary>
public sealed class GrainCallTimes : IIncomingGrainCallFilter
{
    private readonly ConcurrentDictionary<(string Run, string Method), double> _longest = new();

    public GrainCallTimes()
    {
        ShearsMetrics.Meter.CreateObservableGauge("shears_grain_call_longest_seconds",
            () => _longest.Select(e => new Measurement<double>(e.Value, ShearsMetrics.Tag("run", e.Key.Run), ShearsMetrics.Tag("method", e.Key.Method))),
            "s", "Longest grain call served by this silo, per run and method");
    }

    public async Task Invoke(IIncomingGrainCallContext context)
    {
        var clock = Stopwatch.StartNew();
        try
        {
            await context.Invoke();
        }
        finally
        {
            // Shears' grains are keyed by the run id, or "runId/shard".
            if (context.InterfaceName.StartsWith("Shears.", StringComparison.Ordinal) && context.TargetId.Key.ToString() is { } key)
            {
                string run = key.Split('/')[0];
                double seconds = clock.Elapsed.TotalSeconds;
                _longest.AddOrUpdate((run, $"{context.InterfaceName.Split('.')[^1]}.{context.MethodName}"), seconds, (_, known) => Math.Max(known, seconds));
            }
        }
    }

    /// <summary>Per method, the longest call of the run that this silo served, in seconds.</summary>
    public IReadOnlyDictionary<string, double> Longest(string runId) =>
        _longest.Where(e => e.Key.Run == runId).OrderByDescending(e => e.Value).ToDictionary(e => e.Key.Method, e => Math.Round(e.Value, 4));

    public void Forget(string runId)
    {
        foreach (var key in _longest.Keys.Where(k => k.Run == runId).ToArray()) _longest.TryRemove(key, out _);
    }
}
