using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Grains.Compute;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Heads;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

// The model stage this shard runs in the evaluation, fine-tuning and calibration pipelines.
public sealed partial class ShardGrain
{
    async Task<NllResult> IShardGrain.EvaluateAsync(ActivationBatch batch)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var (next, nll) = await compute.RunAsync(() => stage.Evaluate(batch, _pieces));
        if (nll is not null) return nll;
        return await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").EvaluateAsync(next!);
    }

    async Task<TrainStepResult> IShardGrain.TrainStepAsync(ActivationBatch batch, double learningRate)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var (next, done) = await compute.RunAsync(() =>
        {
            ForgetStatistics();
            return stage.Forward(batch, _pieces, learningRate);
        });
        if (done is not null) return done;
        var downstream = await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").TrainStepAsync(next!, learningRate);
        var gradient = await compute.RunAsync(() => stage.Backward(downstream.InputGradient));
        return downstream with { InputGradient = gradient };
    }

    async Task IShardGrain.EndTrainingAsync()
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        // Magnitude keys are computed from the bytes when read, so the next round scores the trained weights.
        await compute.RunAsync(() =>
        {
            ForgetStatistics();
            stage.EndTraining(_pieces);
        });
    }

    async Task IShardGrain.CollectCalibrationAsync(ActivationBatch batch)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        switch (stage.Plan.Kind)
        {
            case StagePlan.EmbeddingKind:
                var (next, _) = await compute.RunAsync(() => stage.Evaluate(batch, _pieces));
                await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").CollectCalibrationAsync(next!);
                break;
            case StagePlan.LayerKind:
                await compute.RunAsync(() => stage.Collect(batch));
                break;
        }
    }

    async Task<ShardRoundResult> IShardGrain.PruneCalibratedAsync(int round, double sparsity)
    {
        var stopwatch = Stopwatch.StartNew();
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var spec = Assignment.Spec;
        var next = await compute.RunAsync(() =>
        {
            ForgetStatistics();
            return stage.PruneCalibrated(_pieces, spec.Method, spec.NmPattern, sparsity);
        });
        if (stage.Plan.Next >= 0)
        {
            var following = GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}");
            foreach (var batch in next) await following.CollectCalibrationAsync(batch);
        }
        return Result(stopwatch);
    }
}
