using Shears.Engine.Rounds;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Selection;
using Shears.Testing;

namespace Shears.Engine.Tests;

public class LocalRoundTests
{
    private static bool Attention(TensorEntry t) => ReferencePruner.DefaultPrunable(t) && t.Name.Contains("self_attn", StringComparison.Ordinal);

    [Theory]
    [InlineData("rows")]
    [InlineData("columns")]
    public async Task Rows_and_columns_mask_the_lowest_l1_units_of_each_tensor_round_after_round(string pattern)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.F32, levels: [0.001f, 0.0625f, 0.25f, 0.5f, 1f, 2f]);
        using var run = new EngineHarness(dir.Path, RunRecipe.Parse("magnitude", pattern, "layer", 1, "q", 0, 0.5), 2, 0, layerPerShard: true);
        var round = RoundChooser.Choose(run.Recipe, run.Layout, run.Shards);
        Assert.IsType<LayerLocalRound>(round);
        bool rows = pattern == "rows";
        foreach (var (target, number) in new[] { (0.25, 1), (0.5, 2) })
        {
            await run.RoundAsync(round, number, target);
            foreach (var (name, mask) in run.Masks())
            {
                var entry = run.Manifest.Get(name);
                var data = CheckpointReader.ReadTensor(run.Manifest, entry);
                long r = entry.Shape[0], c = entry.Shape[1];
                long units = rows ? r : c, length = rows ? c : r;
                long Element(long unit, long k) => rows ? unit * c + k : k * c + unit;
                // The reference: units by (Σ|w| of the dense tensor, index); masked units keep norm 0, so they stay first.
                var norms = Enumerable.Range(0, (int)units)
                    .Select(u => Enumerable.Range(0, (int)length).Sum(k => (double)ReferencePruner.Magnitude(data, entry.DType, Element(u, k)))).ToArray();
                var expected = Enumerable.Range(0, (int)units).OrderBy(u => norms[u]).ThenBy(u => u).Take((int)Counts.Target(target, units)).ToHashSet();
                for (int u = 0; u < units; u++)
                    for (long k = 0; k < length; k++)
                        Assert.True(expected.Contains(u) == mask[Element(u, k)], $"{name} {pattern} {u} at {target}");
            }
        }
    }

    private static int[] PrunedHeads(bool[] q, int headDim, int cols) =>
        Enumerable.Range(0, TieHeavyCheckpoint.Heads).Where(h => Enumerable.Range(h * headDim * cols, headDim * cols).All(e => q[e])).ToArray();

    [Theory]
    [InlineData("layer")]
    [InlineData("global")]
    public async Task Heads_on_several_shards_match_heads_on_one_and_count_exactly(string scope)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.BF16, levels: [0.001f, 0.0625f, 0.25f, 0.5f, 1f, 2f]);
        var recipe = RunRecipe.Parse("magnitude", "heads", scope, 1, "qkvo", 0, 0.5);
        using var spread = new EngineHarness(dir.Path, recipe, 3, 0, Attention, layerPerShard: true);
        using var single = new EngineHarness(dir.Path, recipe, 1, 0, Attention, layerPerShard: true);
        var spreadRound = RoundChooser.Choose(recipe, spread.Layout, spread.Shards);
        var singleRound = RoundChooser.Choose(recipe, single.Layout, single.Shards);
        Assert.IsType(scope == "global" ? typeof(StructuredUnitsRound) : typeof(LayerLocalRound), spreadRound);
        int headDim = TieHeavyCheckpoint.Hidden / TieHeavyCheckpoint.Heads;
        foreach (var (target, number) in new[] { (0.25, 1), (0.5, 2) })
        {
            await spreadRound.RunAsync(new RoundContext(number, target, spread.Masked), CancellationToken.None);
            await singleRound.RunAsync(new RoundContext(number, target, single.Masked), CancellationToken.None);
            var masks = spread.Masks();
            EngineHarness.AssertSame(single.Masks(), masks, $"{scope} heads at {target}");
            var pruned = masks.Where(m => m.Key.EndsWith("q_proj.weight", StringComparison.Ordinal))
                .Select(m => PrunedHeads(m.Value, headDim, TieHeavyCheckpoint.Hidden).Length).ToArray();
            if (scope == "global") Assert.Equal(Counts.Target(target, TieHeavyCheckpoint.Layers * TieHeavyCheckpoint.Heads), pruned.Sum());
            else Assert.All(pruned, p => Assert.Equal(Counts.Target(target, TieHeavyCheckpoint.Heads), p));
            Assert.Equal(spread.Masked.Sum(m => m.Sum()), masks.Values.Sum(m => m.LongCount(x => x)));
        }
    }
}
