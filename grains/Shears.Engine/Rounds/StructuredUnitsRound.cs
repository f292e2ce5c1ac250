using Shears.Pruning.Selection;

namespace Shears.Engine.Rounds;

/// <summary>
/// Structured units (attention heads, MLP neurons) decided by the coordinator from the shards' scores: every unit of
/// every layer ranked together (<paramref name="global"/>), or each layer on its own; each shard then masks its own.
/// A layer whose tensors lie on several shards gets its partial scores summed here (in shard order).
/// </summary>
public sealed class StructuredUnitsRound(RunLayout layout, IShardSet shards, bool global = true) : IRound
{
    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var scores = await Task.WhenAll(layout.Shards.Select((_, s) => shards.UnitScoresAsync(s)));
        var merged = new Dictionary<string, (double[] Scores, HashSet<int> Pruned)>(StringComparer.Ordinal);
        foreach (var set in scores)
            for (int i = 0; i < set.Layers.Count; i++)
            {
                if (!merged.TryGetValue(set.Layers[i], out var layer))
                {
                    merged[set.Layers[i]] = (set.Scores[i].ToArray(), set.Pruned[i].ToHashSet());
                    continue;
                }
                if (layer.Scores.Length != set.Scores[i].Length)
                    throw new InvalidOperationException($"layer '{set.Layers[i]}': shards report {layer.Scores.Length} and {set.Scores[i].Length} units");
                for (int u = 0; u < layer.Scores.Length; u++) layer.Scores[u] += set.Scores[i][u];
                layer.Pruned.UnionWith(set.Pruned[i]);
            }
        // Layers in global position order, so ties between equal scores fall the same way on any number of shards.
        var layers = merged.Select(l => (Name: l.Key, l.Value.Scores, Pruned: l.Value.Pruned.Order().ToArray()))
            .OrderBy(l => layout.TensorOrder[l.Name]).ToArray();
        Dictionary<string, int[]> units;
        if (global)
        {
            var chosen = UnitSelection.SelectLowestGlobal(layers.Select(l => l.Scores).ToArray(), round.Target,
                layers.SelectMany((l, i) => l.Pruned.Select(u => (i, u))).ToArray());
            units = chosen.GroupBy(c => c.Layer).ToDictionary(g => layers[g.Key].Name, g => g.Select(c => c.Unit).ToArray(), StringComparer.Ordinal);
        }
        else
        {
            units = layers.ToDictionary(l => l.Name, l => UnitSelection.SelectLowest(l.Scores, round.Target, l.Pruned), StringComparer.Ordinal);
        }
        token.ThrowIfCancellationRequested();
        var choice = new UnitChoice(round.Round, units);
        var results = await Task.WhenAll(layout.Shards.Select((_, s) => shards.PruneUnitsAsync(s, choice)));
        for (int s = 0; s < results.Length; s++) round.Masked[s] = results[s];
        return new RoundOutcome(null, scores.Sum(r => (long)r.Scores.Sum(x => x.Length) * sizeof(double)));
    }
}
