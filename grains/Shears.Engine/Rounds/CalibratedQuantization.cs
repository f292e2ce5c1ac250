namespace Shears.Engine.Rounds;

/// <summary>
/// GPTQ as the run's last phase, after the masks are final: the calibration sequences go to the first layer, then the
/// layers are quantized one after another, each from the inputs that the already-quantized layers before it compute,
/// and hand their outputs on (as <see cref="CalibratedRound"/> prunes).
/// </summary>
public sealed class CalibratedQuantization(RunLayout layout, IShardSet shards)
{
    public async Task RunAsync(IReadOnlyList<long[]> calibration, CancellationToken token)
    {
        ArgumentNullException.ThrowIfNull(calibration);
        await shards.FeedCalibrationAsync(calibration);
        foreach (int shard in layout.LayerStages)
        {
            token.ThrowIfCancellationRequested();
            await shards.QuantizeCalibratedAsync(shard);
        }
    }
}
