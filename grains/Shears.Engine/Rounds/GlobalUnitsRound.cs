using Shears.Pruning.Heads;

namespace Shears.Engine.Rounds;

/// <summary>Every head of every layer ranked together: scores from the shards, one decision, each shard masks its own.</summary>
public sealed class GlobalUnitsRound(RunLayout layout, IShardSet shards) : IRound
{
    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var scores = await Task.WhenAll(layout.Shards.Select((_, s) => shards.UnitScoresAsync(s)));
        // Layers in global position order, so ties between equal scores fall the same way on any number of shards.
        var layers = scores.SelectMany(r => r.Layers.Select((name, i) => (Name: name, Scores: r.Scores[i], Pruned: r.Pruned[i])))
            .OrderBy(l => layout.TensorOrder[l.Name]).ToArray();
        var chosen = HeadPruning.SelectHeadsGlobal(layers.Select(l => l.Scores).ToArray(), round.Target,
            layers.SelectMany((l, i) => l.Pruned.Select(h => (i, h))).ToArray());
        var choice = new UnitChoice(round.Round,
            chosen.GroupBy(c => c.Layer).ToDictionary(g => layers[g.Key].Name, g => g.Select(c => c.Head).ToArray(), StringComparer.Ordinal));
        token.ThrowIfCancellationRequested();
        var results = await Task.WhenAll(layout.Shards.Select((_, s) => shards.PruneUnitsAsync(s, choice)));
        for (int s = 0; s < results.Length; s++) round.Masked[s] = results[s];
        return new RoundOutcome(null, scores.Sum(r => (long)r.Scores.Sum(x => x.Length) * sizeof(double)));
    }
}
