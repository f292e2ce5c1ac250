using Shears.Engine.Rounds;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Selection;
using Shears.Testing;

namespace Shears.Engine.Tests;

public class ExactSelectionTests
{
    private static RunRecipe Magnitude(SelectionScope scope) => new() { Scope = scope };

    [Theory]
    [InlineData(TensorDType.BF16, true, 3)]
    [InlineData(TensorDType.F32, true, 4)]
    [InlineData(TensorDType.F16, false, 3)]
    [InlineData(TensorDType.F32, false, 5)]
    public async Task Multi_round_runs_match_the_reference_at_every_round(TensorDType dtype, bool global, int shards)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, dtype);
        using var run = new EngineHarness(dir.Path, Magnitude(global ? SelectionScope.Global : SelectionScope.Layer), shards, pieceRows: 7);
        var round = RoundChooser.Choose(run.Recipe, run.Layout, run.Shards);
        Assert.IsType<ExactSelectionRound>(round);
        double[] targets = [0.3, 0.55, 0.8];
        for (int r = 0; r < targets.Length; r++)
        {
            var outcome = await run.RoundAsync(round, r + 1, targets[r]);
            Assert.Equal(global, outcome.Threshold is not null);
            var expected = ReferencePruner.Masks(run.Manifest, targets[r], global);
            EngineHarness.AssertSame(expected, run.Masks(), $"round {r + 1}");
            long n = run.Layout.GroupElements.Sum();
            if (global) Assert.Equal((long)Math.Round(targets[r] * n, MidpointRounding.ToEven), run.Masked.Sum(m => m.Sum()));
            else
                foreach (var (name, mask) in run.Masks())
                    Assert.Equal((long)Math.Round(targets[r] * mask.Length, MidpointRounding.ToEven), mask.LongCount(m => m));
        }
    }

    [Fact]
    public async Task Every_weight_equal_is_decided_by_position_alone()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.BF16, levels: TieHeavyCheckpoint.AllEqual);
        using var run = new EngineHarness(dir.Path, Magnitude(SelectionScope.Global), 4, pieceRows: 5);
        var round = RoundChooser.Choose(run.Recipe, run.Layout, run.Shards);
        await run.RoundAsync(round, 1, 0.37);
        EngineHarness.AssertSame(ReferencePruner.Masks(run.Manifest, 0.37, global: true), run.Masks(), "all equal");
    }

    [Fact]
    public async Task Progressive_targets_are_met_exactly_with_the_lowest_scores_of_each_tensor()
    {
        using var dir = new TempDir();
        // Finite weights: a tensor's mean |w| ranks it, and an infinite mean ranks nothing.
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.F32, levels: [0f, -0f, 0.001f, 0.0625f, 0.25f, 0.5f, -0.5f, 1f, 2f, 3f]);
        using var run = new EngineHarness(dir.Path, Magnitude(SelectionScope.Progressive), 3, pieceRows: 9);
        double[] targets = [0.25, 0.5];
        var perRound = ProgressiveTargets.Compute(run.Layout, run.Shards.Shards.Select(s => s.AbsSumPerPiece()).ToArray(), targets, 0.5);
        var round = RoundChooser.Choose(run.Recipe, run.Layout, run.Shards);
        for (int r = 0; r < targets.Length; r++)
        {
            Assert.Equal(Counts.Target(targets[r], run.Layout.GroupElements.Sum()), perRound[r].Sum());
            await run.RoundAsync(round, r + 1, targets[r], perRound[r]);
            var masks = run.Masks();
            for (int g = 0; g < run.Layout.Prunable.Count; g++)
            {
                string name = run.Layout.Prunable[g];
                var entry = run.Manifest.Get(name);
                var data = CheckpointReader.ReadTensor(run.Manifest, entry);
                // The reference: this tensor's elements by (|w|, position), the first perRound[r][g] masked.
                var order = Enumerable.Range(0, (int)entry.ElementCount)
                    .OrderBy(i => ReferencePruner.Magnitude(data, entry.DType, i)).ThenBy(i => i).ToArray();
                var expected = new bool[entry.ElementCount];
                foreach (int i in order.Take((int)perRound[r][g])) expected[i] = true;
                Assert.Equal(expected, masks[name]);
            }
        }
    }

    [Fact]
    public async Task Several_groups_ask_each_shard_once_per_search_level()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.F32);
        using var run = new EngineHarness(dir.Path, Magnitude(SelectionScope.Layer), 3, pieceRows: 6);
        var recorded = new RecordingShardSet(run.Shards);
        await RoundChooser.Choose(run.Recipe, run.Layout, recorded).RunAsync(new RoundContext(1, 0.5, run.Masked), CancellationToken.None);
        EngineHarness.AssertSame(ReferencePruner.Masks(run.Manifest, 0.5, global: false), run.Masks(), "layer scope");

        // 21 tensors, each split over the three shards, yet one call per shard per level (at most two levels).
        var histograms = recorded.Calls.Where(c => c.Method == "histograms").ToArray();
        Assert.Contains(histograms.Length, new[] { 3, 6 });
        foreach (var level in histograms.Chunk(3)) Assert.Equal([0, 1, 2], level.Select(c => c.Shard).Order());
        Assert.All(histograms.Take(3), c => Assert.Equal(run.Layout.Prunable.Count, c.Queries));
        var counts = recorded.Calls.Where(c => c.Method == "counts").ToArray();
        Assert.Equal(3, counts.Length);
        Assert.All(counts, c => Assert.Equal(run.Layout.Prunable.Count, c.Queries));
    }

    [Fact]
    public async Task Bf16_scores_need_one_level_of_histograms()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Path, TensorDType.BF16);
        using var run = new EngineHarness(dir.Path, Magnitude(SelectionScope.Global), 3, pieceRows: 6);
        var recorded = new RecordingShardSet(run.Shards);
        await RoundChooser.Choose(run.Recipe, run.Layout, recorded).RunAsync(new RoundContext(1, 0.5, run.Masked), CancellationToken.None);
        Assert.Equal(3, recorded.Calls.Count(c => c.Method == "histograms"));
        EngineHarness.AssertSame(ReferencePruner.Masks(run.Manifest, 0.5, global: true), run.Masks(), "bf16");
    }
}
