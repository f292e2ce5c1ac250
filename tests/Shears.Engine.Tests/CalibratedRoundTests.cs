using Shears.Engine.Rounds;

namespace Shears.Engine.Tests;

public class CalibratedRoundTests
{
    /// <summary>Stands in for shards that run the model: each layer reports its own index as its masked count.</summary>
    private sealed class FakeLayers : IShardSet
    {
        public Task<IReadOnlyList<GroupHistogram>> HistogramsAsync(int shard, IReadOnlyList<HistogramQuery> queries) => throw new NotSupportedException();
        public Task<IReadOnlyList<PieceCounts>> CountsAsync(int shard, IReadOnlyList<CountQuery> queries) => throw new NotSupportedException();
        public Task<long[]> ApplyAsync(int shard, ThresholdDecision decision) => throw new NotSupportedException();
        public Task<long[]> ApplyLocalAsync(int shard, LocalDecision decision) => throw new NotSupportedException();
        public Task<UnitScoreSet> UnitScoresAsync(int shard) => throw new NotSupportedException();
        /// <summary>Per layer stage, the block influence each measure reports (its Sum over 10 tokens).</summary>
        public Dictionary<int, double> Influence { get; } = [];
        public Task<long[]> PruneUnitsAsync(int shard, UnitChoice choice) => Task.FromResult(new long[] { 100 });
        public Task<LayerInfluence> BlockInfluenceAsync(int shard) => Task.FromResult(new LayerInfluence(Influence[shard] * 10, 10));
        public Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences) => Task.CompletedTask;
        public async Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity, long[]? targetMasked = null)
        {
            await Task.Yield();
            return targetMasked ?? [shard * 10 + round];
        }

        public async Task<Shears.Pruning.Allocation.OutlierCount> OutlierCountAsync(int shard, double threshold)
        {
            await Task.Yield();
            return new(shard, 100);
        }

        public async Task QuantizeCalibratedAsync(int shard) => await Task.Yield();
    }

    [Theory]
    [InlineData("wanda")]
    [InlineData("sparsegpt")]
    public async Task Feeds_the_first_layer_then_prunes_the_layers_in_order(string method)
    {
        var recipe = RunRecipe.Parse(method, "unstructured", "layer", 1, "q", 0, 0.5);
        // Shard 0 is the embedding, 4 the head; the layers run 1, 2, 3.
        var pieces = Enumerable.Range(0, 5).Select(s => (IReadOnlyList<ShardPiece>)[new ShardPiece($"t{s}", 0, 1, 1, s)]).ToArray();
        var layout = new RunLayout(pieces.Select(p => p[0].Tensor).ToArray(), pieces, [1, 1, 1, 1, 1], [1, 2, 3]);
        var shards = new RecordingShardSet(new FakeLayers());
        var round = RoundChooser.Choose(recipe, layout, shards);
        Assert.IsType<CalibratedRound>(round);
        var masked = pieces.Select(_ => new long[] { -1 }).ToArray();
        var outcome = await round.RunAsync(new RoundContext(2, 0.5, masked, Calibration: [[1, 2, 3], [4, 5]]), CancellationToken.None);

        Assert.Equal([("feed", -1, 2), ("prune layer", 1, 1), ("prune layer", 2, 1), ("prune layer", 3, 1)], shards.Calls);
        Assert.Equal([[-1], [12], [22], [32], [-1]], masked);
        Assert.Null(outcome.Threshold);
    }

    [Fact]
    public async Task A_calibrated_round_without_sequences_is_refused_before_any_call()
    {
        var layout = new RunLayout(["t"], [[new ShardPiece("t", 0, 1, 1, 0)]], [1], [0]);
        var shards = new RecordingShardSet(new FakeLayers());
        var round = new CalibratedRound(layout, shards);
        await Assert.ThrowsAsync<InvalidOperationException>(() => round.RunAsync(new RoundContext(1, 0.5, [[0]]), CancellationToken.None));
        Assert.Empty(shards.Calls);
    }

    [Fact]
    public async Task Quantization_feeds_the_first_layer_then_quantizes_the_layers_in_order()
    {
        var pieces = Enumerable.Range(0, 4).Select(s => (IReadOnlyList<ShardPiece>)[new ShardPiece($"t{s}", 0, 1, 1, s)]).ToArray();
        var layout = new RunLayout(pieces.Select(p => p[0].Tensor).ToArray(), pieces, [1, 1, 1, 1], [1, 2]);
        var shards = new RecordingShardSet(new FakeLayers());
        await new CalibratedQuantization(layout, shards).RunAsync([[1, 2], [3]], CancellationToken.None);
        Assert.Equal([("feed", -1, 2), ("quantize layer", 1, 1), ("quantize layer", 2, 1)], shards.Calls);
    }

    [Fact]
    public async Task Quantization_stops_between_layers_when_cancelled()
    {
        var layout = new RunLayout(["t"], [[new ShardPiece("t", 0, 1, 1, 0)]], [1], [0]);
        var shards = new RecordingShardSet(new FakeLayers());
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => new CalibratedQuantization(layout, shards).RunAsync([[1]], cancelled.Token));
        Assert.Equal([("feed", -1, 1)], shards.Calls);
    }

    [Fact]
    public async Task Outlier_ratios_feed_the_first_layer_then_count_the_layers_in_order()
    {
        var pieces = Enumerable.Range(0, 5).Select(s => (IReadOnlyList<ShardPiece>)[new ShardPiece($"t{s}", 0, 1, 1, s)]).ToArray();
        var layout = new RunLayout(pieces.Select(p => p[0].Tensor).ToArray(), pieces, [1, 1, 1, 1, 1], [1, 2, 3]);
        var shards = new RecordingShardSet(new FakeLayers());
        var ratios = await new OutlierRatios(layout, shards).MeasureAsync([[1, 2, 3]], 5, CancellationToken.None);
        Assert.Equal([("feed", -1, 1), ("count outliers", 1, 1), ("count outliers", 2, 1), ("count outliers", 3, 1)], shards.Calls);
        Assert.Equal([0.01, 0.02, 0.03], ratios);
    }

    [Fact]
    public void Owl_targets_share_each_layers_count_over_its_tensors_by_hand()
    {
        // Two layers of 300 elements: tensors a (100) and b (200), then c and d (150 each). Ratios 1 % and 3 %: r = 0 and
        // 0.16, so s_l = clamp(0.5 + 0.08 − r, 0.42, 0.58) = 0.58 and 0.42: 174 and 126, shared by size as 58 + 116 and 63 + 63.
        IReadOnlyList<ShardPiece>[] shards =
        [
            [],
            [new ShardPiece("b", 0, 10, 20, 1), new ShardPiece("a", 0, 10, 10, 0)],
            [new ShardPiece("c", 0, 10, 15, 2), new ShardPiece("d", 0, 10, 15, 3)],
        ];
        var layout = new RunLayout(["a", "b", "c", "d"], shards, [100, 200, 150, 150], [1, 2]);
        var targets = OwlTargets.Compute(layout, [0.01, 0.03], [0.25, 0.5], 0.08);
        Assert.Equal([58L, 116, 63, 63], targets[1]);
        Assert.Equal(Shears.Pruning.Selection.Counts.Target(0.25, 600), targets[0].Sum());
        Assert.All(Enumerable.Range(0, 4), g => Assert.True(targets[0][g] <= targets[1][g]));
    }

    [Fact]
    public async Task A_calibrated_round_with_group_targets_hands_each_layer_its_tensors_counts()
    {
        var pieces = Enumerable.Range(0, 3).Select(s => (IReadOnlyList<ShardPiece>)[new ShardPiece($"t{s}", 0, 10, 10, s)]).ToArray();
        var layout = new RunLayout(pieces.Select(p => p[0].Tensor).ToArray(), pieces, [100, 100, 100], [1, 2]);
        var round = new CalibratedRound(layout, new FakeLayers());
        var masked = pieces.Select(_ => new long[] { 0 }).ToArray();
        await round.RunAsync(new RoundContext(1, 0.5, masked, GroupTargets: [0, 41, 59], Calibration: [[1]]), CancellationToken.None);
        Assert.Equal([[0], [41], [59]], masked);
    }

    [Fact]
    public async Task Layers_go_lowest_block_influence_first_ties_by_position_and_once_only()
    {
        // Shard 0 is the embedding, 5 the head; the layers run 1 to 4, each one piece of 100 elements.
        var pieces = Enumerable.Range(0, 6).Select(s => (IReadOnlyList<ShardPiece>)[new ShardPiece($"t{s}", 0, 10, 10, 0)]).ToArray();
        var layout = new RunLayout(pieces.Select(p => p[0].Tensor).ToArray(), pieces, [600], [1, 2, 3, 4]);
        var fake = new FakeLayers();
        foreach (var (shard, value) in new[] { (1, 0.3), (2, 0.1), (3, 0.1), (4, 0.05) }) fake.Influence[shard] = value;
        var shards = new RecordingShardSet(fake);
        var round = RoundChooser.Choose(RunRecipe.Parse("magnitude", "layers", "global", 1, "q", 0, 0.5), layout, shards);
        Assert.IsType<LayerRankingRound>(round);
        var masked = pieces.Select(_ => new long[] { 0 }).ToArray();
        // round_half_to_even(0.375 × 4) = 2: layer 4, then the tie 0.1 of layers 2 and 3 goes to the earlier.
        await round.RunAsync(new RoundContext(1, 0.375, masked, Calibration: [[1, 2]]), CancellationToken.None);
        Assert.Equal([("feed", -1, 1), ("block influence", 1, 1), ("block influence", 2, 1), ("block influence", 3, 1), ("block influence", 4, 1),
            ("prune heads", 2, 1), ("prune heads", 4, 1)], shards.Calls);
        Assert.Equal([0, 0, 100, 0, 100, 0], masked.Select(m => m[0]));
        // Round 2 at 0.75 (3 layers): the removed layers measure as they are now, but only one more goes.
        fake.Influence[2] = 0; fake.Influence[4] = 0; fake.Influence[1] = 0.01;
        shards.Calls.Clear();
        await round.RunAsync(new RoundContext(2, 0.75, masked, Calibration: [[1, 2]]), CancellationToken.None);
        Assert.Equal(("prune heads", 1, 1), shards.Calls[^1]);
        Assert.Equal([0, 100, 100, 0, 100, 0], masked.Select(m => m[0]));
        Assert.Equal(0.3 * 0 + 0.01, ((LayerRankingRound)round).LastInfluences[0].Value, 12);
    }
}
