using Shears.Contracts;

namespace Shears.Grains.Runs;

/// <summary>What the coordinator persists after every step: enough to resume the run elsewhere.</summary>
[GenerateSerializer]
public sealed class RunGrainState
{
    [Id(0)] public RunStatus? Status { get; set; }
    [Id(1)] public RunPlan? Plan { get; set; }
    /// <summary>The last round whose masks every shard has persisted.</summary>
    [Id(2)] public int CommittedRound { get; set; }
    [Id(3)] public List<ShardResult> Shards { get; set; } = [];
    [Id(4)] public string? ReportJson { get; set; }
    [Id(5)] public string? StateDirectory { get; set; }
    /// <summary>
    /// Encoders: the dense model's sentence embeddings of the evaluation, fine-tuning and query sentences are written to
    /// files in <see cref="StateDirectory"/> (they can be megabytes: not part of the state written at every step).
    /// </summary>
    // Ids 6-8 held the embeddings themselves in earlier builds: not reused, so older saved state never reads as this.
    [Id(9)] public bool DenseEmbedded { get; set; }
    /// <summary>A quantized --model: the dense checkpoint it decompresses to, in <see cref="StateDirectory"/>, which the run reads instead.</summary>
    [Id(10)] public string? DequantizedModel { get; set; }
    /// <summary>Whether <see cref="DequantizedModel"/>'s tensors are all written.</summary>
    [Id(11)] public bool DequantizedWritten { get; set; }
    /// <summary>OWL: per layer stage, the dense model's outlier ratio, counted once before round 1.</summary>
    [Id(12)] public double[]? OutlierRatios { get; set; }
}
