namespace Shears.Contracts;

/// <summary>
/// A contiguous block of rows of one tensor (or the whole tensor) held by a shard grain.
/// Pieces are listed in global-position order: tensor ordinal order, then row start.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TensorPiece
{
    [Id(0)] public required string Tensor { get; init; }
    [Id(1)] public required long RowStart { get; init; }
    [Id(2)] public required long RowCount { get; init; }
    /// <summary>Elements per row (product of the remaining dimensions).</summary>
    [Id(3)] public required long RowElements { get; init; }
    /// <summary>The selection group this piece belongs to: one for global scope, one per tensor for layer scope.</summary>
    [Id(4)] public int Group { get; init; }
    public long Elements => RowCount * RowElements;
}

/// <summary>What one shard grain holds for a run.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardAssignment
{
    [Id(0)] public required string RunId { get; init; }
    [Id(1)] public required int ShardIndex { get; init; }
    [Id(2)] public required string ModelPath { get; init; }
    [Id(3)] public required IReadOnlyList<TensorPiece> Pieces { get; init; }
    /// <summary>Tensors this shard copies byte for byte into the output (not pruned).</summary>
    [Id(4)] public IReadOnlyList<string> CopyTensors { get; init; } = [];
    [Id(5)] public required RunSpec Spec { get; init; }
    /// <summary>Folder all silos reach where the run keeps its masks between rounds.</summary>
    [Id(6)] public required string StateDirectory { get; init; }
    /// <summary>The last round whose masks were committed; the shard restores them on load (0: none).</summary>
    [Id(7)] public int RestoreRound { get; init; }
    /// <summary>Attention layout, for the heads pattern.</summary>
    [Id(8)] public HeadLayout? Heads { get; init; }
    /// <summary>The model stage this shard runs when the run evaluates or fine-tunes; null otherwise.</summary>
    [Id(9)] public StagePlan? Stage { get; init; }
    /// <summary>
    /// Names this loading of the run's shards (a new one after every recovery): pipeline passes carry it, and a stage
    /// drops messages of an earlier loading that were still on their way.
    /// </summary>
    [Id(10)] public string Epoch { get; init; } = "";
    /// <summary>Every tensor the run quantizes (--quantize), the shard's and the others': each shard computes the output layout from it.</summary>
    [Id(11)] public IReadOnlyList<string> Quantized { get; init; } = [];
}

/// <summary>One stage of the model pipeline: the embedding, one decoder layer (or one half of it), or the head.</summary>
[GenerateSerializer, Immutable]
public sealed record StagePlan
{
    public const string EmbeddingKind = "embedding", LayerKind = "layer", HeadKind = "head";
    [Id(0)] public required string Kind { get; init; }
    [Id(1)] public int Layer { get; init; }
    /// <summary>Every tensor the stage computes with (its pruned pieces and its frozen tensors).</summary>
    [Id(2)] public required IReadOnlyList<string> Tensors { get; init; }
    /// <summary>The shard running the next stage; -1 for the last.</summary>
    [Id(3)] public int Next { get; init; } = -1;
    /// <summary>llama (decoder: perplexity) or bert (encoder: pooled sentence embeddings from the last layer).</summary>
    [Id(4)] public string Model { get; init; } = LlamaModel;
    /// <summary>
    /// For a decoder layer split to fit the silos' memory budgets: <see cref="AttentionPart"/> (input norm and
    /// self-attention, with its residual) or <see cref="MlpPart"/> (post-attention norm and MLP, with its residual); null
    /// for a whole layer and every other stage.
    /// </summary>
    [Id(5)] public string? Part { get; init; }

    public const string LlamaModel = "llama", BertModel = "bert";
    public const string AttentionPart = "attention", MlpPart = "mlp";

    /// <summary>What the stage computes, for messages: "the embedding", "layer 3", "the MLP of layer 3".</summary>
    public string Describe() => Kind != LayerKind ? $"the {Kind}" : Part switch
    {
        AttentionPart => $"the attention of layer {Layer}",
        MlpPart => $"the MLP of layer {Layer}",
        _ => $"layer {Layer}",
    };
}

/// <summary>Sequences on their way through the pipeline: token ids (right-padded) and the hidden states so far.</summary>
[GenerateSerializer, Immutable]
public sealed record ActivationBatch
{
    [Id(0)] public required long[][] TokenIds { get; init; }
    /// <summary>Little-endian fp32 hidden states [batch, length, hidden]; empty before the embedding.</summary>
    [Id(1)] public byte[] Hidden { get; init; } = [];
    [Id(2)] public long[] Shape { get; init; } = [];
    /// <summary>Encoder distillation: the dense model's sentence embeddings [batch, hidden], flattened.</summary>
    [Id(3)] public float[] Targets { get; init; } = [];
    /// <summary>--distill hidden: the dense model's hidden states at this point of the pipeline, laid out as <see cref="Hidden"/>.</summary>
    [Id(4)] public byte[] Teacher { get; init; } = [];
    /// <summary>--distill hidden: the weighted hidden-state loss of the layers this micro-batch has passed so far.</summary>
    [Id(5)] public double HiddenLoss { get; init; }
}

[GenerateSerializer, Immutable]
public sealed record NllResult
{
    [Id(0)] public double NllSum { get; init; }
    [Id(1)] public long Tokens { get; init; }
    /// <summary>Encoders: the batch's L2-normalized mean-pooled sentence embeddings [batch, hidden], flattened.</summary>
    [Id(2)] public float[] Embeddings { get; init; } = [];
}

/// <summary>Attention geometry read from config.json.</summary>
[GenerateSerializer, Immutable]
public sealed record HeadLayout
{
    [Id(0)] public int Heads { get; init; }
    [Id(1)] public int KvHeads { get; init; }
    [Id(2)] public int HeadDim { get; init; }
    [Id(3)] public int Hidden { get; init; }
}

[GenerateSerializer, Immutable]
public sealed record ShardInfo
{
    [Id(0)] public required string Silo { get; init; }
    [Id(1)] public long Elements { get; init; }
    [Id(2)] public long BytesRead { get; init; }
    /// <summary>Masked elements per piece, in assignment order (after reloading any persisted masks).</summary>
    [Id(3)] public long[] MaskedPerPiece { get; init; } = [];
    /// <summary>Per piece: the mean |w| (for progressive allocation).</summary>
    [Id(4)] public double[] MeanMagnitudePerPiece { get; init; } = [];
    [Id(5)] public double[] AbsSumPerPiece { get; init; } = [];
    /// <summary>Threads of the silo's compute executor: how many stages that silo can run at once.</summary>
    [Id(6)] public int ComputeThreads { get; init; } = 1;
}

/// <summary>Digit histograms over the unmasked scores of the selected pieces.</summary>
[GenerateSerializer, Immutable]
public sealed record HistogramRequest
{
    [Id(0)] public required int Group { get; init; }
    [Id(1)] public required int Level { get; init; }
    [Id(2)] public uint Prefix { get; init; }
}

/// <summary>A 65,536-bucket histogram of one 16-bit digit of the unmasked scores.</summary>
[GenerateSerializer, Immutable]
public sealed record HistogramResult
{
    [Id(0)] public required long[] Counts { get; init; }
    /// <summary>Every counted score has zero low 16 bits (bf16 data): the top digit alone decides exactly.</summary>
    [Id(1)] public bool LowBitsZero { get; init; }
}

/// <summary>The counts of one selection group's unmasked scores below and equal to a threshold key.</summary>
[GenerateSerializer, Immutable]
public sealed record CountRequest
{
    [Id(0)] public required int Group { get; init; }
    [Id(1)] public required uint Threshold { get; init; }
}

/// <summary>The per-piece counts of unmasked scores below and equal to a threshold.</summary>
[GenerateSerializer, Immutable]
public sealed record ThresholdCounts
{
    [Id(0)] public long[] Less { get; init; } = [];
    [Id(1)] public long[] Equal { get; init; } = [];
}

/// <summary>A round's decision for one shard. Per piece: mask below <see cref="Thresholds"/> and take that many ties.</summary>
[GenerateSerializer, Immutable]
public sealed record MaskDecision
{
    [Id(0)] public required int Round { get; init; }
    /// <summary>Per piece: threshold key (scores below it are masked), or null where the piece masks nothing by threshold.</summary>
    [Id(1)] public required uint?[] Thresholds { get; init; }
    [Id(2)] public required long[] Ties { get; init; }
}

/// <summary>A round decided inside the shard: layer-wise groups that lie wholly on it.</summary>
[GenerateSerializer, Immutable]
public sealed record LocalRoundRequest
{
    [Id(0)] public required int Round { get; init; }
    /// <summary>The round's cumulative target sparsity (rows, columns and heads count their units by it).</summary>
    [Id(1)] public required double Sparsity { get; init; }
    /// <summary>Per piece, the cumulative number of masked elements the piece must reach; -1 where the piece is not decided locally.</summary>
    [Id(2)] public required long[] TargetMasked { get; init; }
}

/// <summary>What a shard wrote, and the size of its pruned tensors dense and in the sparse encoding (bitmask + non-zero values).</summary>
[GenerateSerializer, Immutable]
public sealed record ShardWriteResult
{
    [Id(0)] public long BytesWritten { get; init; }
    [Id(1)] public long Elements { get; init; }
    [Id(2)] public long ZeroElements { get; init; }
    [Id(3)] public long DenseBytes { get; init; }
    [Id(4)] public long SparseBytes { get; init; }
}

/// <summary>The structured units a shard holds (heads, neurons): per layer (named by its first tensor) the units' scores and those already pruned.</summary>
[GenerateSerializer, Immutable]
public sealed record UnitScores
{
    [Id(0)] public IReadOnlyList<string> Layers { get; init; } = [];
    [Id(1)] public IReadOnlyList<double[]> Scores { get; init; } = [];
    [Id(2)] public IReadOnlyList<int[]> Pruned { get; init; } = [];
}

/// <summary>Units to prune (heads, neurons), per layer (named by its first tensor), decided by the coordinator.</summary>
[GenerateSerializer, Immutable]
public sealed record UnitDecision
{
    [Id(0)] public required int Round { get; init; }
    [Id(1)] public required IReadOnlyDictionary<string, int[]> Units { get; init; }
}

/// <summary>--remove: slices of a tensor dropped from the output, along axis 0 (rows; a 1-D tensor's elements) or 1 (columns).</summary>
[GenerateSerializer, Immutable]
public sealed record TensorRemoval
{
    [Id(0)] public required string Tensor { get; init; }
    [Id(1)] public int Axis { get; init; }
    [Id(2)] public int[] Removed { get; init; } = [];
}

[GenerateSerializer, Immutable]
public sealed record ShardRoundResult
{
    [Id(0)] public long[] MaskedPerPiece { get; init; } = [];
    [Id(1)] public double Seconds { get; init; }
    /// <summary>OWL's outlier count of a layer: scores above the threshold times the layer's mean, and scores counted.</summary>
    [Id(2)] public long Outliers { get; init; }
    [Id(3)] public long Scored { get; init; }
    /// <summary>--pattern layers: the layer's block influence, Σ (1 − cos(input, output)) over <see cref="Tokens"/> real tokens.</summary>
    [Id(4)] public double InfluenceSum { get; init; }
    [Id(5)] public long Tokens { get; init; }
}

/// <summary>
/// Holds one shard's weights for a run: reads its own bytes from the checkpoint, keeps its masks,
/// answers statistics, applies decisions and writes its tensors. Keyed "runId/shardIndex".
/// </summary>
public interface IShardGrain : IGrainWithStringKey
{
    /// <summary>
    /// Starts loading the assignment and returns at once: reading a shard's bytes can take longer than a call may last.
    /// A load of an earlier epoch still under way finishes first.
    /// </summary>
    Task StartLoadAsync(ShardAssignment assignment);

    /// <summary>The load of <paramref name="epoch"/> once done, or null while it runs (after waiting up to <paramref name="wait"/>); throws its error.</summary>
    Task<ShardInfo?> LoadedAsync(string epoch, TimeSpan wait);
    // Work on a shard's weights waits for the silo's compute executor, which other shards of the silo share: each of
    // these calls returns its result if the work ends within a few seconds, else a ticket that PollAsync follows.

    /// <summary>One histogram per request: the requests of every selection group a search level asks this shard about travel together.</summary>
    Task<ShardReply<HistogramResult[]>> HistogramsAsync(HistogramRequest[] requests);
    /// <summary>One set of per-piece counts per request, for several selection groups at once.</summary>
    Task<ShardReply<ThresholdCounts[]>> CountsAsync(CountRequest[] requests);
    Task<ShardReply<ShardRoundResult>> ApplyAsync(MaskDecision decision);
    Task<ShardReply<ShardRoundResult>> ApplyLocalAsync(LocalRoundRequest request);
    /// <summary>Scores of the heads of the attention layers this shard holds (global head ranking).</summary>
    Task<ShardReply<UnitScores>> UnitScoresAsync();
    /// <summary>Masks the given heads (q/o, and k/v once a KV group is empty) in the named layers.</summary>
    Task<ShardReply<ShardRoundResult>> PruneUnitsAsync(UnitDecision decision);
    /// <summary>Persists this round's masks where all silos reach them; the round's outcome feeds this silo's metrics.</summary>
    Task<ShardReply<bool>> CommitRoundAsync(RoundResult round);
    /// <summary>
    /// Quantizes the shard's tensors of <see cref="ShardAssignment.Quantized"/> from their pruned weights; afterwards the shard
    /// computes (and evaluates) with the dequantized weights, and writes the quantized tensors. Per piece: the error.
    /// </summary>
    Task<ShardReply<QuantizedTensorError[]>> QuantizeAsync();
    /// <summary>
    /// --remove with --quantize: the shard's tensors quantized as the smaller model holds them (without the slices of
    /// <paramref name="removals"/>, so groups run over the kept columns); the stage then computes with the dequantized
    /// weights expanded back with zeros in the removed slices, and with the other Linear weights of its layer
    /// quantized too, as the smaller model quantized whole is. Per piece: the error over its kept elements.
    /// </summary>
    Task<ShardReply<QuantizedTensorError[]>> QuantizeRemovedAsync(TensorRemoval[] removals);
    Task<ShardReply<ShardWriteResult>> WriteAsync(string outputDirectory);
    /// <summary>--remove: per piece, the slices its structured masks cover whole (what the smaller model drops).</summary>
    Task<ShardReply<TensorRemoval[]>> RemovalAsync();
    /// <summary>
    /// --remove: writes the shard's tensors without the removed slices into the safetensors layout that
    /// <paramref name="removals"/> (every cut of the run) gives; for an ONNX model, its masked tensors in place as
    /// <see cref="WriteAsync"/> does (the graph is rewritten afterwards).
    /// </summary>
    /// <param name="removedLayers">Whole layers removed: their tensors are left out and the later layers renumbered.</param>
    Task<ShardReply<ShardWriteResult>> WriteRemovedAsync(string outputDirectory, TensorRemoval[] removals, int[] removedLayers);
    /// <summary>
    /// --remove with --quantize: this shard's tensors cut by <paramref name="removals"/> (those of
    /// <paramref name="removedLayers"/> left out, the later renumbered) and written straight into the quantized layout in
    /// <paramref name="outputDirectory"/>, planned over the removed model's headers in <paramref name="removedDirectory"/>
    /// (the tensors named in <paramref name="quantized"/> rounded to nearest and packed, the others as they are).
    /// </summary>
    Task<ShardReply<ShardWriteResult>> WriteQuantizedRemovedAsync(string removedDirectory, string outputDirectory, TensorRemoval[] removals, int[] removedLayers, string[] quantized);

    /// <summary>The work behind <paramref name="ticket"/>: done, or still running after waiting up to <paramref name="wait"/>; throws its error.</summary>
    Task<ShardReply<T>> PollAsync<T>(long ticket, TimeSpan wait);

    Task ReleaseAsync();
}

/// <summary>The answer to work that may outlast a call: its result when it ended within the call, else a ticket to poll.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardReply<T>
{
    [Id(0)] public bool Done { get; init; }
    [Id(1)] public T? Result { get; init; }
    [Id(2)] public long Ticket { get; init; }
}

/// <summary>A shard grain was asked for work before it was loaded: it was re-activated (its silo was lost) and must be reloaded.</summary>
[GenerateSerializer]
public sealed class ShardNotLoadedException : Exception
{
    public ShardNotLoadedException(string message) : base(message) { }
}
