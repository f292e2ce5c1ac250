using Shears.Engine.Rounds;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Selection;
using Shears.Testing;

namespace Shears.Engine.Tests;

public class NeuronRoundTests
{
    private static bool Mlp(TensorEntry t) => ReferencePruner.DefaultPrunable(t) && t.Name.Contains(".mlp.", StringComparison.Ordinal);

    /// <summary>The L1 score of every neuron from the input file by a plain loop (gate row + up row + down column), per layer.</summary>
    private static double[][] ReferenceScores(CheckpointManifest manifest)
    {
        var scores = new double[TieHeavyCheckpoint.Layers][];
        const int n = TieHeavyCheckpoint.Intermediate, h = TieHeavyCheckpoint.Hidden;
        for (int l = 0; l < TieHeavyCheckpoint.Layers; l++)
        {
            byte[] Read(string proj) => CheckpointReader.ReadTensor(manifest, manifest.Get($"model.layers.{l}.mlp.{proj}.weight"));
            var (gate, up, down) = (Read("gate_proj"), Read("up_proj"), Read("down_proj"));
            var dtype = manifest.Get($"model.layers.{l}.mlp.gate_proj.weight").DType;
            scores[l] = new double[n];
            for (int i = 0; i < n; i++)
            {
                double g = 0, u = 0, d = 0;
                for (int c = 0; c < h; c++) g += ReferencePruner.Magnitude(gate, dtype, i * h + c);
                for (int c = 0; c < h; c++) u += ReferencePruner.Magnitude(up, dtype, i * h + c);
                for (int r = 0; r < h; r++) d += ReferencePruner.Magnitude(down, dtype, r * n + i);
                scores[l][i] = g + u + d;
            }
        }
        return scores;
    }

    private static int[] PrunedRows(bool[] mask, int cols) =>
        Enumerable.Range(0, mask.Length / cols).Where(r => Enumerable.Range(r * cols, cols).All(e => mask[e])).ToArray();

    [Theory]
    [InlineData("layer")]
    [InlineData("global")]
    public async Task Neurons_on_several_shards_match_one_shard_and_the_reference(string scope)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.BF16, levels: [0.001f, 0.0625f, 0.25f, 0.5f, 1f, 2f]);
        var recipe = RunRecipe.Parse("magnitude", "neurons", scope, 1, "q", 0, 0.5);
        using var spread = new EngineHarness(dir.Path, recipe, 3, 0, Mlp, layerPerShard: true);
        using var single = new EngineHarness(dir.Path, recipe, 1, 0, Mlp, layerPerShard: true);
        var spreadRound = RoundChooser.Choose(recipe, spread.Layout, spread.Shards);
        var singleRound = RoundChooser.Choose(recipe, single.Layout, single.Shards);
        Assert.IsType<StructuredUnitsRound>(spreadRound);
        var reference = ReferenceScores(spread.Manifest);
        const int n = TieHeavyCheckpoint.Intermediate, h = TieHeavyCheckpoint.Hidden;
        foreach (var (target, number) in new[] { (0.25, 1), (0.5, 2) })
        {
            await spreadRound.RunAsync(new RoundContext(number, target, spread.Masked), CancellationToken.None);
            await singleRound.RunAsync(new RoundContext(number, target, single.Masked), CancellationToken.None);
            var masks = spread.Masks();
            EngineHarness.AssertSame(single.Masks(), masks, $"{scope} neurons at {target}");

            // Magnitude scores of the neurons left do not change: round 2's result is the one-shot choice at its target.
            var expected = scope == "global"
                ? Enumerable.Range(0, TieHeavyCheckpoint.Layers).SelectMany(l => Enumerable.Range(0, n).Select(i => (l, i)))
                    .OrderBy(x => reference[x.l][x.i]).ThenBy(x => x.l).ThenBy(x => x.i).Take((int)Counts.Target(target, TieHeavyCheckpoint.Layers * n)).ToHashSet()
                : Enumerable.Range(0, TieHeavyCheckpoint.Layers).SelectMany(l => Enumerable.Range(0, n).OrderBy(i => reference[l][i]).ThenBy(i => i)
                    .Take((int)Counts.Target(target, n)).Select(i => (l, i))).ToHashSet();
            for (int l = 0; l < TieHeavyCheckpoint.Layers; l++)
            {
                var gate = masks[$"model.layers.{l}.mlp.gate_proj.weight"];
                var up = masks[$"model.layers.{l}.mlp.up_proj.weight"];
                var down = masks[$"model.layers.{l}.mlp.down_proj.weight"];
                for (int i = 0; i < n; i++)
                {
                    bool pruned = expected.Contains((l, i));
                    for (int c = 0; c < h; c++)
                    {
                        Assert.True(pruned == gate[i * h + c] && pruned == up[i * h + c], $"layer {l} neuron {i} rows at {target}");
                        Assert.True(pruned == down[c * n + i], $"layer {l} neuron {i} down column at {target}");
                    }
                }
            }
            Assert.Equal(expected.Count * 3L * h, spread.Masked.Sum(m => m.Sum()));
        }
        if (scope == "global")
            Assert.NotEqual(1, Enumerable.Range(0, TieHeavyCheckpoint.Layers).Select(l => PrunedRows(spread.Masks()[$"model.layers.{l}.mlp.gate_proj.weight"], h).Length).Distinct().Count());
    }
}
