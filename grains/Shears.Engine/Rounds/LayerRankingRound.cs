using Shears.Pruning.Selection;

namespace Shears.Engine.Rounds;

/// <summary>
/// Whole layers (ShortGPT, Men et al. 2024): the calibration sequences go through the model once, each layer measuring
/// its block influence 1 − mean cos(input, output) over the real tokens from the inputs the layers before it compute;
/// the coordinator then masks, among the layers still in, the lowest-influence ones (ties by layer order) until
/// round_half_to_even(s × layers) are out. A layer is one shard (a stage): masking it masks all of its matrices.
/// </summary>
public sealed class LayerRankingRound(RunLayout layout, IShardSet shards) : IRound
{
    /// <summary>The block influence of every layer stage measured in the latest round, in layer order.</summary>
    public IReadOnlyList<LayerInfluence> LastInfluences { get; private set; } = [];

    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var sequences = round.Calibration ?? throw new InvalidOperationException("--pattern layers needs calibration sequences");
        var stages = layout.LayerStages;
        if (stages.Count == 0) throw new InvalidOperationException("--pattern layers: the model has no layer stages");
        await shards.FeedCalibrationAsync(sequences);
        var influences = new LayerInfluence[stages.Count];
        for (int i = 0; i < stages.Count; i++)
        {
            token.ThrowIfCancellationRequested();
            influences[i] = await shards.BlockInfluenceAsync(stages[i]);
        }
        LastInfluences = influences;
        long Elements(int shard) => layout.Shards[shard].Sum(p => p.Elements);
        var removed = Enumerable.Range(0, stages.Count).Where(i => round.Masked[stages[i]].Sum() == Elements(stages[i])).ToHashSet();
        long more = Counts.Target(round.Target, stages.Count) - removed.Count;
        var chosen = Enumerable.Range(0, stages.Count).Where(i => !removed.Contains(i))
            .OrderBy(i => influences[i].Value).ThenBy(i => i).Take((int)Math.Max(0, more)).Order().ToArray();
        token.ThrowIfCancellationRequested();
        foreach (int i in chosen)
        {
            int shard = stages[i];
            var choice = new UnitChoice(round.Round, new Dictionary<string, int[]>(StringComparer.Ordinal) { [layout.Shards[shard][0].Tensor] = [i] });
            round.Masked[shard] = await shards.PruneUnitsAsync(shard, choice);
        }
        return RoundOutcome.Local with { BlockInfluence = influences.Select(i => i.Value).ToArray() };
    }
}
