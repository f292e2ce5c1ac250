using System.Diagnostics;
using Shears.Contracts;
using Shears.Engine.Shards;

namespace Shears.Grains.Shards;

// The model stage this shard runs in the evaluation, fine-tuning and calibration pipelines: every call queues work
// for the stage's worker or reads its progress, and returns at once.
public sealed partial class ShardGrain : IStageGrain, IStageHost
{
    private StageWorker? _worker;
    private StageWorker Worker => _worker ??= new StageWorker(this);

    int IStageHost.ShardIndex => Assignment.ShardIndex;
    string IStageHost.Epoch => Assignment.Epoch;
    StageRunner IStageHost.Stage => Stage;
    IReadOnlyList<LoadedPiece> IStageHost.Pieces => _pieces;
    Task<T> IStageHost.Compute<T>(Func<T> work) => compute.RunPipelinedAsync(work);
    void IStageHost.WeightsChanging() => ForgetStatistics();
    async Task IStageHost.BeforeAsync(StageMessage message)
    {
        foreach (var interceptor in interceptors) await interceptor.BeforeAsync(this.GetPrimaryKeyString(), Stage.Plan, message);
    }
    Task IStageHost.SendNextAsync(StageMessage message) => StageGrain(Stage.Plan.Next).PushAsync(message);
    Task IStageHost.SendBackAsync(int shard, string pass, int index, byte[] gradient) => StageGrain(shard).PushGradientAsync(pass, index, gradient);

    private StageRunner Stage => _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage (not loaded on {silo.SiloAddress})");

    private IStageGrain StageGrain(int shard) => GrainFactory.GetGrain<IStageGrain>($"{Assignment.RunId}/{shard}");

    Task IStageGrain.PushAsync(StageMessage message)
    {
        _ = Stage;
        Worker.Push(message);
        return Task.CompletedTask;
    }

    Task IStageGrain.PushGradientAsync(string pass, int index, byte[] gradient)
    {
        _ = Stage;
        Worker.PushGradient(pass, index, gradient);
        return Task.CompletedTask;
    }

    Task<PassProgress> IStageGrain.PollAsync(string pass, int taken, TimeSpan wait)
    {
        _ = Stage;
        return Worker.PollAsync(pass, taken, wait);
    }

    Task IStageGrain.EndPassAsync(string pass)
    {
        _worker?.EndPass(pass);
        return Task.CompletedTask;
    }

    Task<ShardReply<bool>> IStageGrain.EndTrainingAsync()
    {
        var stage = Stage;
        // Magnitude keys are computed from the bytes when read, so the next round scores the trained weights.
        return Jobs.Run(compute.RunTorchAsync(() =>
        {
            ForgetStatistics();
            stage.EndTraining(_pieces);
            return true;
        }));
    }

    Task IStageGrain.StartPruneCalibratedAsync(string pass, int round, double sparsity, int inputs, long[]? targetMasked)
    {
        var stage = Stage;
        var spec = Assignment.Spec;
        Worker.StartPruneCalibrated(pass, async () =>
        {
            var stopwatch = Stopwatch.StartNew();
            var next = await compute.RunTorchAsync(() =>
            {
                ForgetStatistics();
                return PruneCalibrated(stage, spec, round, sparsity, targetMasked);
            });
            await PassOnAsync(pass, stage, next);
            return Result(stopwatch);
        }, inputs);
        return Task.CompletedTask;
    }

    Task IStageGrain.StartQuantizeCalibratedAsync(string pass, int inputs)
    {
        var stage = Stage;
        Worker.StartPruneCalibrated(pass, async () =>
        {
            var stopwatch = Stopwatch.StartNew();
            var next = await compute.RunTorchAsync(() => QuantizeCalibrated(stage));
            await PassOnAsync(pass, stage, next);
            return Result(stopwatch);
        }, inputs);
        return Task.CompletedTask;
    }

    Task IStageGrain.StartOutlierCountAsync(string pass, double threshold, int inputs)
    {
        var stage = Stage;
        Worker.StartPruneCalibrated(pass, async () =>
        {
            var stopwatch = Stopwatch.StartNew();
            var (count, next) = await compute.RunTorchAsync(() => stage.CountOutliers(_pieces, threshold));
            await PassOnAsync(pass, stage, next);
            return Result(stopwatch) with { Outliers = count.Outliers, Scored = count.Elements };
        }, inputs);
        return Task.CompletedTask;
    }

    Task IStageGrain.StartBlockInfluenceAsync(string pass, int inputs)
    {
        var stage = Stage;
        Worker.StartPruneCalibrated(pass, async () =>
        {
            var stopwatch = Stopwatch.StartNew();
            var (sum, tokens, next) = await compute.RunTorchAsync(() => stage.BlockInfluence(_pieces));
            await PassOnAsync(pass, stage, next);
            return Result(stopwatch) with { InfluenceSum = sum, Tokens = tokens };
        }, inputs);
        return Task.CompletedTask;
    }

    /// <summary>The next layer calibrates on what this layer computes now.</summary>
    private async Task PassOnAsync(string pass, StageRunner stage, List<ActivationBatch> next)
    {
        if (stage.Plan.Next < 0) return;
        var following = StageGrain(stage.Plan.Next);
        for (int i = 0; i < next.Count; i++)
            await following.PushAsync(new StageMessage
            {
                Pass = pass, Kind = PassKind.Calibrate, Index = i, Count = next.Count, Batch = next[i], From = Assignment.ShardIndex,
            });
    }

    Task<ShardRoundResult?> IStageGrain.PruneCalibratedResultAsync(string pass, TimeSpan wait)
    {
        _ = Stage;
        return Worker.CalibratedResultAsync(pass, wait);
    }
}
