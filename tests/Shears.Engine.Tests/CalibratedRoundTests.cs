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
        public Task<HeadScoreSet> HeadScoresAsync(int shard) => throw new NotSupportedException();
        public Task<long[]> PruneHeadsAsync(int shard, HeadChoice choice) => throw new NotSupportedException();
        public Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences) => Task.CompletedTask;
        public async Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity)
        {
            await Task.Yield();
            return [shard * 10 + round];
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
}
