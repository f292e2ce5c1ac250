using Shears.Contracts;
using Shears.Engine;
using Shears.Engine.Rounds;

namespace Shears.Grains.Runs;

// The rounds are the engine's; the coordinator hosts them over its shard grains.
public sealed partial class RunGrain
{
    private IRound? _round;
    private GrainShards? _shardSet;

    /// <summary>The engine's view of this run's shards: one per activation, so that a calibration pass it starts is also the one it ends.</summary>
    private GrainShards ShardSet(RunPlan plan) => _shardSet ??= new GrainShards(this, plan);

    /// <summary>Per round, per selection group (tensor): the cumulative masked count progressive allocation asks for.</summary>
    private static long[][] ProgressiveTargets(RunPlan plan, ShardInfo[] infos, double[] targets, double spread) =>
        Shears.Engine.Rounds.ProgressiveTargets.Compute(Layout(plan), infos.Select(i => i.AbsSumPerPiece).ToArray(), targets, spread);

    /// <summary>One round of the kind the run's recipe asks for, decided by the engine from the shards' statistics.</summary>
    private async Task<(uint? Threshold, long Bytes, double[]? Influence)> RunRoundAsync(
        RunPlan plan, RunSpec spec, int round, double target, long[][] masked, long[]? groupTargets, IReadOnlyList<long[]>? calibration, CancellationToken token)
    {
        // The plan and the spec are the run's own: the round kind is chosen once per activation.
        _round ??= RoundChooser.Choose(EngineWire.Recipe(spec), Layout(plan), ShardSet(plan));
        var outcome = await _round.RunAsync(new RoundContext(round, target, masked, groupTargets, calibration), token);
        return (outcome.Threshold, outcome.SelectionBytes, outcome.BlockInfluence?.ToArray());
    }

    private static RunLayout Layout(RunPlan plan) => new(
        plan.Prunable,
        plan.Shards.Select(s => (IReadOnlyList<ShardPiece>)s.Pieces.Select(EngineWire.Piece).ToArray()).ToArray(),
        plan.GroupElements,
        plan.Stages?.Select((s, i) => (s, i)).Where(x => x.s.Kind == StagePlan.LayerKind).Select(x => x.i).ToArray() ?? []);

    /// <summary>The engine's shard set over this run's shard grains: each call is one grain call.</summary>
    private sealed class GrainShards(RunGrain run, RunPlan plan) : IShardSet
    {
        public async Task<IReadOnlyList<GroupHistogram>> HistogramsAsync(int shard, IReadOnlyList<HistogramQuery> queries) =>
            (await run.Shard(shard).HistogramsAsync(queries.Select(EngineWire.Request).ToArray()).Complete(run.Shard(shard))).Select(EngineWire.Histogram).ToArray();

        public async Task<IReadOnlyList<PieceCounts>> CountsAsync(int shard, IReadOnlyList<CountQuery> queries) =>
            (await run.Shard(shard).CountsAsync(queries.Select(EngineWire.Request).ToArray()).Complete(run.Shard(shard))).Select(EngineWire.Counts).ToArray();

        public async Task<long[]> ApplyAsync(int shard, ThresholdDecision decision) =>
            (await run.Shard(shard).ApplyAsync(EngineWire.Decision(decision)).Complete(run.Shard(shard))).MaskedPerPiece;

        public async Task<long[]> ApplyLocalAsync(int shard, LocalDecision decision) =>
            (await run.Shard(shard).ApplyLocalAsync(EngineWire.Request(decision)).Complete(run.Shard(shard))).MaskedPerPiece;

        public async Task<UnitScoreSet> UnitScoresAsync(int shard) => EngineWire.Scores(await run.Shard(shard).UnitScoresAsync().Complete(run.Shard(shard)));

        public async Task<long[]> PruneUnitsAsync(int shard, UnitChoice choice) =>
            (await run.Shard(shard).PruneUnitsAsync(EngineWire.Decision(choice)).Complete(run.Shard(shard))).MaskedPerPiece;

        public async Task FeedCalibrationAsync(IReadOnlyList<long[]> sequences)
        {
            // Micro-batches whose activations fit in a message; the first stage embeds them and hands them to the first
            // layer, which keeps them. The layers' pruning jobs then name the same pass.
            if (_calibration is { } previous) await run.Pipeline.EndAsync(previous.Pass);
            var batches = run.MicroBatches(sequences, plan.Hidden, 16);
            _calibration = (await run.Pipeline.FeedCalibrationAsync(batches, CancellationToken.None), batches.Length);
        }

        // The calibration pass under way: its name and how many micro-batches each layer receives.
        private (string Pass, int Inputs)? _calibration;

        public async Task<long[]> PruneCalibratedAsync(int shard, int round, double sparsity, long[]? targetMasked = null)
        {
            var (pass, inputs) = _calibration ?? throw new InvalidOperationException("a layer is pruned before the calibration sequences were fed");
            return (await run.Pipeline.PruneCalibratedAsync(pass, shard, round, sparsity, targetMasked, inputs, CancellationToken.None)).MaskedPerPiece;
        }

        public async Task<Shears.Pruning.Allocation.OutlierCount> OutlierCountAsync(int shard, double threshold)
        {
            var (pass, inputs) = _calibration ?? throw new InvalidOperationException("a layer's outliers are counted before the calibration sequences were fed");
            var result = await run.Pipeline.OutlierCountAsync(pass, shard, threshold, inputs, CancellationToken.None);
            return new(result.Outliers, result.Scored);
        }

        public async Task<LayerInfluence> BlockInfluenceAsync(int shard)
        {
            var (pass, inputs) = _calibration ?? throw new InvalidOperationException("a layer's block influence is measured before the calibration sequences were fed");
            var result = await run.Pipeline.BlockInfluenceAsync(pass, shard, inputs, CancellationToken.None);
            return new(result.InfluenceSum, result.Tokens);
        }

        public async Task QuantizeCalibratedAsync(int shard)
        {
            var (pass, inputs) = _calibration ?? throw new InvalidOperationException("a layer is quantized before the calibration sequences were fed");
            await run.Pipeline.QuantizeCalibratedAsync(pass, shard, inputs, CancellationToken.None);
        }
    }
}
