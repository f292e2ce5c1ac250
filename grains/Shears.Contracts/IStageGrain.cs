using Orleans.Concurrency;

namespace Shears.Contracts;

/// <summary>What a pass through the model pipeline does at each stage.</summary>
public enum PassKind
{
    /// <summary>Forward without gradients; the last stage keeps each micro-batch's NLL or embeddings.</summary>
    Evaluate,
    /// <summary>Forward with gradients; the last stage computes the loss and the gradients flow back stage by stage.</summary>
    Train,
    /// <summary>Forward to the first layer, which keeps the hidden states as its calibration inputs.</summary>
    Calibrate,
}

/// <summary>One micro-batch of a pass on its way down the pipeline.</summary>
[GenerateSerializer, Immutable]
public sealed record StageMessage
{
    /// <summary>Names the pass: unique per coordinator attempt, so a message of an abandoned pass is never taken for a new one.</summary>
    [Id(0)] public required string Pass { get; init; }
    [Id(1)] public required PassKind Kind { get; init; }
    /// <summary>The micro-batch's position in its pass (or in its training step).</summary>
    [Id(2)] public required int Index { get; init; }
    /// <summary>Micro-batches in the pass (Train: in the step, whose optimizer step follows the last backward).</summary>
    [Id(3)] public required int Count { get; init; }
    [Id(4)] public required ActivationBatch Batch { get; init; }
    [Id(5)] public double LearningRate { get; init; }
    /// <summary>Train: this micro-batch's share of the step's loss (its predictions or sentences over the step's), so the accumulated gradient is the whole batch's.</summary>
    [Id(6)] public double LossWeight { get; init; } = 1;
    /// <summary>The shard of the stage that sent it (-1 from the coordinator): where a training micro-batch's gradient goes back.</summary>
    [Id(7)] public int From { get; init; } = -1;
    /// <summary>
    /// Train with --distill hidden: each layer adds this factor times the sum, over the micro-batch's real tokens, of
    /// ‖student − teacher‖² / ‖teacher‖² of its output hidden states (1 / (layers × the step's tokens)); 0: no such term.
    /// </summary>
    [Id(8)] public double HiddenWeight { get; init; }
}

/// <summary>What a stage has done for a pass so far.</summary>
[GenerateSerializer, Immutable]
public sealed record PassProgress
{
    /// <summary>Micro-batches this stage has finished: forwarded (Evaluate), back-propagated (Train) or kept (Calibrate).</summary>
    [Id(0)] public int Done { get; init; }
    /// <summary>At the last stage: results of the micro-batches from the index asked for on, in index order.</summary>
    [Id(1)] public IReadOnlyList<PassOutput> Outputs { get; init; } = [];
}

[GenerateSerializer, Immutable]
public sealed record PassOutput
{
    [Id(0)] public required int Index { get; init; }
    /// <summary>Evaluate: summed NLL or embeddings.</summary>
    [Id(1)] public NllResult? Result { get; init; }
    /// <summary>Train: the micro-batch's weighted loss (the step's loss is their sum).</summary>
    [Id(2)] public double Loss { get; init; }
}

/// <summary>
/// The model stage a shard runs (the embedding, one layer, or the head). Every call returns at once: a stage queues
/// what it receives, a worker computes it and hands the result to the next stage with another short call, and the
/// coordinator follows a pass by polling. No call waits for the stages after it, so no call's duration grows with the
/// number of stages or the model's width. Keyed like the shard grain ("runId/shardIndex"): the same activation.
/// </summary>
public interface IStageGrain : IGrainWithStringKey
{
    /// <summary>Queues a micro-batch; returns once it is queued.</summary>
    [AlwaysInterleave]
    Task PushAsync(StageMessage message);

    /// <summary>Queues the gradient of a training micro-batch's output (from the next stage).</summary>
    [AlwaysInterleave]
    Task PushGradientAsync(string pass, int index, byte[] gradient);

    /// <summary>
    /// The pass's progress at this stage, waiting up to <paramref name="wait"/> for something new past
    /// <paramref name="taken"/> outputs (which are dropped: the caller has them). Throws the error that stopped this stage's worker.
    /// </summary>
    [AlwaysInterleave]
    Task<PassProgress> PollAsync(string pass, int taken, TimeSpan wait);

    /// <summary>Forgets a pass (finished, or abandoned by a recovery).</summary>
    [AlwaysInterleave]
    Task EndPassAsync(string pass);

    /// <summary>Ends a fine-tuning phase: the trained weights become the shard's weights (in their own dtype).</summary>
    Task<ShardReply<bool>> EndTrainingAsync();

    /// <summary>
    /// Starts pruning this layer with Wanda or SparseGPT from its kept calibration inputs (once
    /// <paramref name="inputs"/> micro-batches have arrived), then hands the inputs, passed through the pruned layer, to
    /// the next stage. Returns at once; <see cref="PruneCalibratedResultAsync"/> follows it.
    /// </summary>
    /// <param name="targetMasked">Per piece, the cumulative masked count to reach (per-layer allocation); null: every tensor at <paramref name="sparsity"/>.</param>
    Task StartPruneCalibratedAsync(string pass, int round, double sparsity, int inputs, long[]? targetMasked);

    /// <summary>
    /// Starts counting this layer's outliers (OWL: Wanda scores above <paramref name="threshold"/> times the layer's mean)
    /// from its kept calibration inputs (once <paramref name="inputs"/> micro-batches have arrived), then hands the inputs,
    /// passed through the unchanged layer, to the next stage. Returns at once; <see cref="PruneCalibratedResultAsync"/>
    /// follows it (its <see cref="ShardRoundResult.Outliers"/> and <see cref="ShardRoundResult.Scored"/>).
    /// </summary>
    Task StartOutlierCountAsync(string pass, double threshold, int inputs);

    /// <summary>
    /// Starts measuring this layer's block influence (--pattern layers: 1 − cos between each real token's input and
    /// output hidden state, summed) from its kept calibration inputs (once <paramref name="inputs"/> micro-batches have
    /// arrived), then hands the outputs to the next stage. Returns at once; <see cref="PruneCalibratedResultAsync"/>
    /// follows it (its <see cref="ShardRoundResult.InfluenceSum"/> and <see cref="ShardRoundResult.Tokens"/>).
    /// </summary>
    Task StartBlockInfluenceAsync(string pass, int inputs);

    /// <summary>
    /// Starts GPTQ on this layer's quantized weights from its kept calibration inputs (once <paramref name="inputs"/>
    /// micro-batches have arrived; the masks stay as they are), then hands the inputs, passed through the quantized
    /// layer, to the next stage. Returns at once; <see cref="PruneCalibratedResultAsync"/> follows it.
    /// </summary>
    Task StartQuantizeCalibratedAsync(string pass, int inputs);

    /// <summary>The calibrated pruning's (or quantization's) result, or null while it runs (after waiting up to <paramref name="wait"/>); throws its error.</summary>
    [AlwaysInterleave]
    Task<ShardRoundResult?> PruneCalibratedResultAsync(string pass, TimeSpan wait);
}
