using Shears.Contracts;
using Shears.Engine.Rounds;

namespace Shears.Grains.Runs;

// OWL: the layers' outlier ratios, counted once on the dense model before round 1 and kept with the run's state, so a
// run resumed after round 1 allocates as the undisturbed run does.
public sealed partial class RunGrain
{
    /// <summary>Per round, per selection group (tensor): the cumulative masked count OWL's allocation asks for.</summary>
    private async Task<long[][]> OwlTargetsAsync(
        RunPlan plan, RunSpec spec, double[] targets, IReadOnlyList<long[]> calibration, Func<string, Func<Task>, Task> resilient, CancellationToken token)
    {
        if (state.State.OutlierRatios is null)
        {
            await SetStatus(s => s with { Phase = "counting the layers' outliers" });
            double[]? ratios = null;
            await resilient("counting outliers", async () =>
                ratios = await new OutlierRatios(Layout(plan), ShardSet(plan)).MeasureAsync(calibration, spec.OwlThreshold, token));
            state.State.OutlierRatios = ratios;
            await SaveStateAsync();
        }
        return OwlTargets.Compute(Layout(plan), state.State.OutlierRatios!, targets, spec.OwlLambda);
    }
}
