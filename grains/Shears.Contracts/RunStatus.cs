namespace Shears.Contracts;

public enum RunState { Pending, Running, Completed, Failed, Cancelled }

/// <summary>A quality measurement: perplexity for causal language models.</summary>
[GenerateSerializer, Immutable]
public sealed record EvalMetric
{
    [Id(0)] public required string Metric { get; init; }
    [Id(1)] public double Value { get; init; }
    [Id(2)] public long Tokens { get; init; }
    /// <summary>Further measures (encoders: fidelityP5, neighbourAgreement10, sentences).</summary>
    [Id(3)] public IReadOnlyDictionary<string, double>? Measures { get; init; }
}

[GenerateSerializer, Immutable]
public sealed record RoundResult
{
    [Id(0)] public int Round { get; init; }
    [Id(1)] public double TargetSparsity { get; init; }
    [Id(2)] public long MaskedWeights { get; init; }
    [Id(3)] public double AchievedSparsity { get; init; }
    /// <summary>Largest score masked in this round (global scope); null for layer-wise rounds.</summary>
    [Id(4)] public double? Threshold { get; init; }
    [Id(5)] public double Seconds { get; init; }
    [Id(6)] public long SelectionBytes { get; init; }
    /// <summary>Evaluation after this round's pruning (and fine-tuning), when --eval is given.</summary>
    [Id(7)] public EvalMetric? Eval { get; init; }
    /// <summary>Mean training loss of this round's fine-tuning steps, when --finetune-steps is given.</summary>
    [Id(8)] public double? FinetuneLoss { get; init; }
    /// <summary>The last round of a run with --quantize: the error of each quantized tensor (its eval is measured quantized).</summary>
    [System.Text.Json.Serialization.JsonIgnore] // the report gives it in its own section
    [Id(9)] public IReadOnlyList<QuantizedTensorError>? Quantized { get; init; }
    /// <summary>--pattern layers: each layer's block influence measured in this round (before its masking), in layer order.</summary>
    [Id(10)] public double[]? BlockInfluence { get; init; }
}

/// <summary>How far one tensor's dequantized weights lie from its pruned weights.</summary>
[GenerateSerializer, Immutable]
public sealed record QuantizedTensorError
{
    [Id(0)] public required string Name { get; init; }
    [Id(1)] public long Elements { get; init; }
    [Id(2)] public double AbsErrorSum { get; init; }
    [Id(3)] public double MaxAbsError { get; init; }
    public double MeanAbsError => Elements == 0 ? 0 : AbsErrorSum / Elements;
}

[GenerateSerializer, Immutable]
public sealed record TensorResult
{
    [Id(0)] public required string Name { get; init; }
    [Id(1)] public required long[] Shape { get; init; }
    [Id(2)] public required string DType { get; init; }
    [Id(3)] public long Elements { get; init; }
    [Id(4)] public long MaskedWeights { get; init; }
    [Id(5)] public bool Prunable { get; init; }
}

[GenerateSerializer, Immutable]
public sealed record ShardResult
{
    [Id(0)] public required string Grain { get; init; }
    [Id(1)] public required string Silo { get; init; }
    [Id(2)] public required IReadOnlyList<string> Tensors { get; init; }
    [Id(3)] public long Elements { get; init; }
}

/// <summary>Where a run stands; what `shears status` shows and what clients poll.</summary>
[GenerateSerializer, Immutable]
public sealed record RunStatus
{
    [Id(0)] public required string RunId { get; init; }
    [Id(1)] public RunState State { get; init; }
    [Id(2)] public string Phase { get; init; } = "";
    [Id(3)] public int Round { get; init; }
    [Id(4)] public int TotalRounds { get; init; }
    [Id(5)] public IReadOnlyList<RoundResult> Rounds { get; init; } = [];
    [Id(6)] public string? Error { get; init; }
    [Id(7)] public long PrunableWeights { get; init; }
    [Id(8)] public RunSpec? Spec { get; init; }
    [Id(9)] public DateTimeOffset? StartedAt { get; init; }
    [Id(10)] public DateTimeOffset? FinishedAt { get; init; }
    [Id(11)] public int Shards { get; init; }
    /// <summary>Times the run went back to its last committed round after losing a shard or a silo.</summary>
    [Id(12)] public int Recoveries { get; init; }
    /// <summary>The silo the coordinator runs on.</summary>
    [Id(13)] public string? Coordinator { get; init; }
    /// <summary>Evaluation of the dense model, before the first round.</summary>
    [Id(14)] public EvalMetric? Baseline { get; init; }

    public bool IsFinished => State is RunState.Completed or RunState.Failed or RunState.Cancelled;
}
