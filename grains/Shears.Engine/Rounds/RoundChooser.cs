namespace Shears.Engine.Rounds;

/// <summary>Picks the kind of round a recipe runs.</summary>
public static class RoundChooser
{
    public static IRound Choose(RunRecipe recipe, RunLayout layout, IShardSet shards) => recipe switch
    {
        // Whole layers ranked by their block influence on the calibration activations.
        { Pattern: PrunePattern.Layers } => new LayerRankingRound(layout, shards),
        // Calibrated methods prune layer by layer from activations, whatever the pattern.
        { Calibrated: true } => new CalibratedRound(layout, shards),
        // Neurons always go through the coordinator: a neuron's group may span tensors on several shards.
        { Pattern: PrunePattern.Neurons } => new StructuredUnitsRound(layout, shards, global: recipe.Scope == SelectionScope.Global),
        { Pattern: PrunePattern.Heads, Scope: SelectionScope.Global } => new StructuredUnitsRound(layout, shards, global: true),
        { Pattern: not PrunePattern.Unstructured } => new LayerLocalRound(layout, shards),
        _ => new ExactSelectionRound(layout, shards, global: recipe.Scope == SelectionScope.Global),
    };
}
