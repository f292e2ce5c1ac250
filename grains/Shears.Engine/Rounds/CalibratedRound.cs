namespace Shears.Engine.Rounds;

/// <summary>
/// Wanda and SparseGPT: the calibration sequences go to the first layer, then the layers are pruned one after
/// another, each from the inputs that the already-pruned layers before it compute, and hand their outputs on. With
/// per-group targets (OWL's per-layer allocation) each tensor is pruned to its own count, else all to the round's target.
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
            round.Masked[shard] = await shards.PruneCalibratedAsync(shard, round.Round, round.Target, PieceTargets(shard, round.GroupTargets));
        }
        return RoundOutcome.Local;
    }

    private long[]? PieceTargets(int shard, long[]? groupTargets)
    {
        if (groupTargets is null) return null;
        var pieces = layout.Shards[shard];
        foreach (var piece in pieces)
            if (piece.Elements != layout.GroupElements[piece.Group])
                throw new InvalidOperationException($"tensor '{piece.Tensor}' is split over pieces; a calibrated layer holds whole tensors");
        return pieces.Select(p => groupTargets[p.Group]).ToArray();
    }
}
