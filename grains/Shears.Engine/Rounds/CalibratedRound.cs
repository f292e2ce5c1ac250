namespace Shears.Engine.Rounds;

/// <summary>
/// Wanda and SparseGPT: the calibration sequences go to the first layer, then the layers are pruned one after
/// another, each from the inputs that the already-pruned layers before it compute, and hand their outputs on.
/// </summary>
public sealed class CalibratedRound(RunLayout layout, IShardSet shards) : IRound
{
    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var sequences = round.Calibration ?? throw new InvalidOperationException("a calibrated round needs calibration sequences");
        await shards.FeedCalibrationAsync(sequences);
        foreach (int shard in layout.LayerStages)
        {
            token.ThrowIfCancellationRequested();
            round.Masked[shard] = await shards.PruneCalibratedAsync(shard, round.Round, round.Target);
        }
        return RoundOutcome.Local;
    }
}
