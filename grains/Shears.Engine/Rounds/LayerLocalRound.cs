namespace Shears.Engine.Rounds;

/// <summary>
/// Rows, columns, heads per layer and N:M rank units inside a tensor or layer, which lie whole on one shard:
/// every shard decides alone from the round's target.
/// </summary>
public sealed class LayerLocalRound(RunLayout layout, IShardSet shards) : IRound
{
    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var results = await Task.WhenAll(layout.Shards.Select((pieces, s) =>
            shards.ApplyLocalAsync(s, new LocalDecision(round.Round, round.Target, new long[pieces.Count]))));
        for (int s = 0; s < results.Length; s++) round.Masked[s] = results[s];
        return RoundOutcome.Local;
    }
}
