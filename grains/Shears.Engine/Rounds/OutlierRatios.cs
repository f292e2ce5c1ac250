namespace Shears.Engine.Rounds;

/// <summary>
/// OWL's first phase, before any round: the calibration sequences go through the model once, and each layer counts
/// the outliers among its Wanda scores from the inputs the layers before it compute, then hands them on unchanged.
/// </summary>
public sealed class OutlierRatios(RunLayout layout, IShardSet shards)
{
    /// <summary>Per layer stage, in the order of <see cref="RunLayout.LayerStages"/>: outliers / elements.</summary>
    public async Task<double[]> MeasureAsync(IReadOnlyList<long[]> calibration, double threshold, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(calibration);
        await shards.FeedCalibrationAsync(calibration);
        var ratios = new double[layout.LayerStages.Count];
        for (int i = 0; i < ratios.Length; i++)
        {
            token.ThrowIfCancellationRequested();
            ratios[i] = (await shards.OutlierCountAsync(layout.LayerStages[i], threshold)).Ratio;
        }
        return ratios;
    }
}
