using Shears.Contracts;

namespace Shears.Grains.Runs;

/// <summary>
/// Drives passes through the stages' pipeline from the coordinator with short calls only: it pushes micro-batches into
/// the first stage (several in flight, so stages on different silos work at once), polls the stage where a pass ends,
/// and, when a poll brings nothing new, probes every stage so that a stage's error or a lost stage surfaces at once.
/// </summary>
internal sealed class PipelineDriver
{
    /// <summary>How long one poll waits for news: far below Orleans' response timeout, whatever the model's width.</summary>
    public static readonly TimeSpan PollWait = TimeSpan.FromSeconds(2);

    private readonly IGrainFactory _grains;
    private readonly string _runId, _epoch;

    /// <summary>Shard indices of the stages in pipeline order (embedding first).</summary>
    public IReadOnlyList<int> Order { get; }

    public PipelineDriver(IGrainFactory grains, string runId, string epoch, IReadOnlyList<StagePlan?> stages)
    {
        (_grains, _runId, _epoch) = (grains, runId, epoch);
        var order = new List<int>();
        for (int shard = 0; shard >= 0 && order.Count <= stages.Count; shard = stages[shard]!.Next) order.Add(shard);
        if (order.Count > stages.Count) throw new InvalidOperationException("the stages' plan has a cycle");
        Order = order;
    }

    private IStageGrain Stage(int shard) => _grains.GetGrain<IStageGrain>($"{_runId}/{shard}");

    public string NewPass() => $"{_epoch}/{Guid.NewGuid():N}";

    /// <summary>Micro-batches in flight at once: enough to keep every stage busy, few enough to bound each stage's queue.</summary>
    private int Window => Math.Clamp(2 * Order.Count, 2, 16);

    /// <summary>Runs the micro-batches forward; the last stage's outputs, in order.</summary>
    public async Task<PassOutput[]> EvaluateAsync(IReadOnlyList<ActivationBatch> batches, CancellationToken token)
    {
        string pass = NewPass();
        var outputs = new List<PassOutput>(batches.Count);
        int pushed = 0;
        try
        {
            await FollowAsync(pass, Order[^1], async progress =>
            {
                outputs.AddRange(progress?.Outputs ?? []);
                while (pushed < batches.Count && pushed - outputs.Count < Window)
                {
                    await Stage(Order[0]).PushAsync(new StageMessage { Pass = pass, Kind = PassKind.Evaluate, Index = pushed, Count = batches.Count, Batch = batches[pushed] });
                    pushed++;
                }
                return outputs.Count == batches.Count;
            }, () => outputs.Count, token);
        }
        finally
        {
            await EndAsync(pass);
        }
        return outputs.OrderBy(o => o.Index).ToArray();
    }

    /// <summary>
    /// One training step as micro-batches (GPipe): all go forward, their gradients come back, each stage accumulates
    /// them and steps its optimizer after the last. Returns the step's loss (the sum of the weighted micro-batch losses).
    /// </summary>
    /// <param name="hiddenWeight">--distill hidden: <see cref="StageMessage.HiddenWeight"/>; 0: none.</param>
    public async Task<double> TrainStepAsync(IReadOnlyList<ActivationBatch> batches, IReadOnlyList<double> weights, double learningRate, CancellationToken token, double hiddenWeight = 0)
    {
        string pass = NewPass();
        try
        {
            for (int i = 0; i < batches.Count; i++)
                await Stage(Order[0]).PushAsync(new StageMessage
                {
                    Pass = pass, Kind = PassKind.Train, Index = i, Count = batches.Count, Batch = batches[i], LearningRate = learningRate, LossWeight = weights[i],
                    HiddenWeight = hiddenWeight,
                });
            double loss = 0;
            int losses = 0;
            await FollowAsync(pass, Order[^1], progress =>
            {
                foreach (var output in progress?.Outputs ?? []) loss += output.Loss;
                losses += progress?.Outputs.Count ?? 0;
                return Task.FromResult(losses == batches.Count);
            }, () => losses, token);
            // The first stage takes the last gradients: once it has, every stage has stepped.
            await FollowAsync(pass, Order[0], progress => Task.FromResult(progress?.Done == batches.Count), () => 0, token);
            return loss;
        }
        finally
        {
            await EndAsync(pass);
        }
    }

    /// <summary>Sends calibration sequences through the embedding to the first layer, which keeps them; returns the pass that names them.</summary>
    public async Task<string> FeedCalibrationAsync(IReadOnlyList<ActivationBatch> batches, CancellationToken token)
    {
        string pass = NewPass();
        for (int i = 0; i < batches.Count; i++)
            await Stage(Order[0]).PushAsync(new StageMessage { Pass = pass, Kind = PassKind.Calibrate, Index = i, Count = batches.Count, Batch = batches[i] });
        await FollowAsync(pass, Order[1], progress => Task.FromResult(progress?.Done == batches.Count), () => 0, token);
        return pass;
    }

    /// <summary>Prunes one layer from its calibration inputs as a job the coordinator follows; the layer then feeds the next.</summary>
    public async Task<ShardRoundResult> PruneCalibratedAsync(string pass, int shard, int round, double sparsity, long[]? targetMasked, int inputs, CancellationToken token)
    {
        await Stage(shard).StartPruneCalibratedAsync(pass, round, sparsity, inputs, targetMasked);
        return await CalibratedResultAsync(pass, shard, token);
    }

    /// <summary>Counts one layer's outliers (OWL) as a job the coordinator follows; the unchanged layer then feeds the next.</summary>
    public async Task<ShardRoundResult> OutlierCountAsync(string pass, int shard, double threshold, int inputs, CancellationToken token)
    {
        await Stage(shard).StartOutlierCountAsync(pass, threshold, inputs);
        return await CalibratedResultAsync(pass, shard, token);
    }

    /// <summary>Measures one layer's block influence as a job the coordinator follows; the layer's outputs then feed the next.</summary>
    public async Task<ShardRoundResult> BlockInfluenceAsync(string pass, int shard, int inputs, CancellationToken token)
    {
        await Stage(shard).StartBlockInfluenceAsync(pass, inputs);
        return await CalibratedResultAsync(pass, shard, token);
    }

    /// <summary>Quantizes one layer with GPTQ from its calibration inputs as a job the coordinator follows; the layer then feeds the next.</summary>
    public async Task QuantizeCalibratedAsync(string pass, int shard, int inputs, CancellationToken token)
    {
        await Stage(shard).StartQuantizeCalibratedAsync(pass, inputs);
        await CalibratedResultAsync(pass, shard, token);
    }

    private async Task<ShardRoundResult> CalibratedResultAsync(string pass, int shard, CancellationToken token)
    {
        while (true)
        {
            token.ThrowIfCancellationRequested();
            if (await Stage(shard).PruneCalibratedResultAsync(pass, PollWait) is { } result) return result;
            await ProbeAsync(pass);
        }
    }

    /// <summary>Ends a calibration pass at every stage.</summary>
    public Task EndAsync(string pass) => Task.WhenAll(Order.Select(async s =>
    {
        // A stage on a lost silo has nothing to forget; the recovery reloads it.
        try { await Stage(s).EndPassAsync(pass); } catch (Exception e) when (e is OrleansException or TimeoutException) { }
    }));

    /// <summary>
    /// Polls <paramref name="watched"/> until <paramref name="absorb"/> says the pass is complete (it is called once
    /// first with null, to push). A poll with no news probes every stage, which throws a stage's error or finds a stage
    /// that lost its weights with its silo.
    /// </summary>
    private async Task FollowAsync(string pass, int watched, Func<PassProgress?, Task<bool>> absorb, Func<int> taken, CancellationToken token)
    {
        if (await absorb(null)) return;
        int done = -1;
        while (true)
        {
            token.ThrowIfCancellationRequested();
            var progress = await Stage(watched).PollAsync(pass, taken(), PollWait);
            bool news = progress.Outputs.Count > 0 || progress.Done != done;
            done = progress.Done;
            if (await absorb(progress)) return;
            if (!news) await ProbeAsync(pass);
        }
    }

    private Task ProbeAsync(string pass) => Task.WhenAll(Order.Select(s => Stage(s).PollAsync(pass, int.MaxValue, TimeSpan.Zero)));
}
