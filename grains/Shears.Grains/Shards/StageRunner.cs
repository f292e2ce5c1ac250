using System.Runtime.InteropServices;
using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Grains.Shards;

/// <summary>
/// The model stage a shard runs for evaluation and fine-tuning: built from the shard's own pruned
/// pieces and the stage's frozen tensors, on the silo's device. Every method runs on the compute
/// executor; tensors that live across a pipeline call are held here, never in a dispose scope.
/// </summary>
/// <param name="bypassMasked">--pattern layers on an encoder: a layer whose matrices are all masked passes its input on.</param>
internal sealed partial class StageRunner(
    StagePlan plan, LlamaConfig? config, Device device, CheckpointManifest manifest, IReadOnlyList<TensorEntry> frozen,
    Shears.Pruning.Encoders.BertConfig? bertConfig = null, Shears.Pruning.Encoders.BertWeightNames? bertNames = null, bool bypassMasked = false) : IDisposable
{
    // A post-norm encoder layer with zero matrices still adds its biases and normalizes; a layer taken out by --pattern
    // layers computes nothing instead, as the output without it will. Decided from the masks at every build, so a shard
    // loaded again after a lost silo bypasses what it bypassed before.
    private bool _bypassed;
    private LlamaStage? _stage;
    private Shears.Pruning.Encoders.BertStage? _bert;
    private bool IsBert => Plan.Model == StagePlan.BertModel;

    /// <summary>The built stage's parameters by tensor name, whichever model family it is.</summary>
    private IReadOnlyDictionary<string, Tensor> StageParameters => (IReadOnlyDictionary<string, Tensor>?)_stage?.Parameters ?? _bert!.Parameters;
    private Dictionary<string, Tensor>? _owned;
    private MaskedAdamW? _optimizer;
    // The backwards done in the step so far.
    // Training: each micro-batch's input and output until its backward (and, --distill hidden, this layer's term of the loss).
    private readonly Dictionary<int, (Tensor Input, Tensor Output, Tensor? HiddenLoss)> _steps = [];
    private int _backwardDone;


    public StagePlan Plan { get; } = plan;

    /// <summary>The stage's tensors that no piece of the shard holds: read from the checkpoint at each build.</summary>
    public IReadOnlyList<TensorEntry> Frozen => frozen;

    /// <summary>The pieces' weights differ from the checkpoint's (fine-tuned or OBS-updated): rounds persist them.</summary>
    public bool Trained { get; private set; }

    // Weights the stage computes with instead of the pieces' masked ones (the dequantized weights of a quantized run).
    private IReadOnlyDictionary<string, byte[]>? _weights;

    /// <summary>Computes with these raw weights (by tensor name, pieces or frozen tensors) instead of its own from now on; null: its own again.</summary>
    public void UseWeights(IReadOnlyDictionary<string, byte[]>? weights)
    {
        _weights = weights;
        DisposeStage();
    }

    /// <summary>Drops the built stage (the masks or weights changed); the next call builds it anew.</summary>
    public void Invalidate()
    {
        DisposeStage();
    }

    /// <summary>
    /// Back to the start of a round (the shard was loaded again, e.g. after a lost silo): the built stage and any
    /// calibration inputs collected so far are dropped, so a repeated round does not count its inputs twice.
    /// </summary>
    public void Reset()
    {
        DisposeStage();
        DropCalibration();
    }

    private LlamaStage Stage(IReadOnlyList<LoadedPiece> pieces)
    {
        Build(pieces);
        return _stage ?? throw new InvalidOperationException("this stage is an encoder stage");
    }

    private void Build(IReadOnlyList<LoadedPiece> pieces)
    {
        _bypassed = bypassMasked && IsBert && Plan.Kind == StagePlan.LayerKind && pieces.Count > 0 && pieces.All(p => p.Mask.CountSet() == p.Mask.Length);
        if (_stage is not null || _bert is not null) return;
        _owned = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        // Frozen tensors are read again at each build (from the page cache, as a rule) rather than kept as bytes beside
        // their float32 copy for the whole run: the embedding and head of a 32,000-token vocabulary are 250 MB each in bf16.
        foreach (var entry in frozen)
            _owned[entry.Name] = _weights?.GetValueOrDefault(entry.Name) is { } given
                ? LlamaWeights.ToFloat32(entry, given).to(device)
                : LlamaWeights.ToFloat32(entry, into => CheckpointReader.ReadTensor(manifest, entry, into)).to(device);
        // Masked straight into the tensor's storage, so a layer's weights are never held twice in managed memory.
        foreach (var piece in pieces)
            _owned[piece.Entry.Name] = _weights?.GetValueOrDefault(piece.Entry.Name) is { } given
                ? LlamaWeights.ToFloat32(piece.Entry, given).to(device)
                : LlamaWeights.ToFloat32(piece.Entry, into => ShardMath.MaskedRange(piece, 0, checked((int)piece.Piece.Elements), into)).to(device);
        // The stage holds the weights now: the mapped bytes need not stay resident beside them.
        foreach (var piece in pieces) piece.ReleaseResident();
        (_stage, _bert) = Construct(_owned);
    }

    /// <summary>The stage's module (decoder or encoder family) over these tensors, with gradients off.</summary>
    private (LlamaStage?, Shears.Pruning.Encoders.BertStage?) Construct(IReadOnlyDictionary<string, Tensor> tensors)
    {
        if (IsBert)
        {
            Shears.Pruning.Encoders.BertStage bert = Plan.Kind == StagePlan.EmbeddingKind
                ? Shears.Pruning.Encoders.BertEmbeddings.FromTensors(bertConfig!, bertNames!.Embeddings, tensors, device)
                : Shears.Pruning.Encoders.BertLayer.FromTensors(bertConfig!, Plan.Layer, bertNames!.Layers[Plan.Layer], tensors, device);
            bert.SetRequiresGrad(false);
            return (null, bert);
        }
        LlamaStage stage = Plan.Kind switch
        {
            StagePlan.EmbeddingKind => LlamaEmbedding.FromTensors(config!, tensors, device),
            StagePlan.LayerKind => LlamaDecoderLayer.FromTensors(config!, Plan.Layer, tensors, device, part: Plan.Part switch
            {
                StagePlan.AttentionPart => LlamaLayerPart.Attention,
                StagePlan.MlpPart => LlamaLayerPart.Mlp,
                null => LlamaLayerPart.Whole,
                var other => throw new InvalidOperationException($"layer {Plan.Layer}: no part '{other}' of a decoder layer"),
            }),
            _ => LlamaHead.FromTensors(config!, tensors, device),
        };
        stage.SetRequiresGrad(false);
        return (stage, null);
    }

    /// <summary>Runs the built stage on its input: token ids for an embedding, hidden states otherwise.</summary>
    private Tensor Run(Tensor input, ActivationBatch batch) =>
        // An alias, not the input itself: the caller owns both, and training back-propagates through it.
        _bypassed && _bert is Shears.Pruning.Encoders.BertLayer ? input.alias() : Forward(_stage, _bert, input, batch);

    /// <summary>One of this stage's modules (decoder or encoder family) on its input.</summary>
    private Tensor Forward(LlamaStage? stage, Shears.Pruning.Encoders.BertStage? bert, Tensor input, ActivationBatch batch)
    {
        if (bert is null) return stage!.Forward(input);
        if (bert is Shears.Pruning.Encoders.BertEmbeddings embeddings) return embeddings.Forward(input);
        return ((Shears.Pruning.Encoders.BertLayer)bert).Forward(input, PaddingMask(batch));
    }

    /// <summary>1 for real tokens, 0 for the right padding, from each sequence's length.</summary>
    private Tensor PaddingMask(ActivationBatch batch)
    {
        int count = batch.TokenIds.Length, length = batch.TokenIds.Max(s => s.Length);
        var mask = new long[count * length];
        for (int b = 0; b < count; b++) Array.Fill(mask, 1L, b * length, batch.TokenIds[b].Length);
        return tensor(mask, [count, length], ScalarType.Int64, device);
    }

    /// <summary>Mean pooling over the real tokens, then L2 normalization (sentence-transformers' recipe), differentiable.</summary>
    private Tensor Pool(Tensor hidden, ActivationBatch batch)
    {
        var mask = PaddingMask(batch).to(ScalarType.Float32).unsqueeze(-1);
        using var tiny = 1e-9.ToScalar(); // held: an implicit Scalar may be finalized while libtorch reads it
        var summed = (hidden * mask).sum([1]);
        var pooled = summed / mask.sum([1]).clamp_min(tiny);
        return nn.functional.normalize(pooled, p: 2, dim: -1);
    }

    private bool Last => Plan.Next < 0;

    private Tensor Input(ActivationBatch batch)
    {
        if (Plan.Kind == StagePlan.EmbeddingKind) return Targets(batch, device);
        var floats = MemoryMarshal.Cast<byte, float>(batch.Hidden).ToArray();
        return tensor(floats, batch.Shape, ScalarType.Float32, device);
    }

    /// <summary>The batch's token ids, right-padded with 0, as an int64 tensor [batch, length].</summary>
    private static Tensor Targets(ActivationBatch batch, Device device)
    {
        int count = batch.TokenIds.Length, length = batch.TokenIds.Max(s => s.Length);
        var ids = new long[count * length];
        for (int b = 0; b < count; b++) batch.TokenIds[b].CopyTo(ids, b * length);
        return tensor(ids, [count, length], ScalarType.Int64, device);
    }

    private static byte[] Bytes(Tensor t)
    {
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return MemoryMarshal.AsBytes(cpu.data<float>().ToArray().AsSpan()).ToArray();
    }

    /// <summary>Forward without gradients: the next stage's batch, or at the head the summed NLL.</summary>
    public (ActivationBatch? Next, NllResult? Nll) Evaluate(ActivationBatch batch, IReadOnlyList<LoadedPiece> pieces)
    {
        Build(pieces);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var output = Run(Input(batch), batch);
        if (IsBert && Last)
        {
            using var cpu = Pool(output, batch).cpu().contiguous();
            return (null, new NllResult { Embeddings = cpu.data<float>().ToArray(), Tokens = batch.TokenIds.Sum(t => (long)t.Length) });
        }
        if (Plan.Kind == StagePlan.HeadKind)
        {
            var (nll, tokens) = Perplexity.NegativeLogLikelihood(output, Targets(batch, device), batch.TokenIds.Select(s => s.Length).ToArray());
            return (null, new NllResult { NllSum = nll, Tokens = tokens });
        }
        return (batch with { Hidden = Bytes(output), Shape = output.shape }, null);
    }

    /// <summary>
    /// The forward half of a training micro-batch (<paramref name="message"/>.Index of a step of .Count). The stage
    /// that computes the loss scales it by the micro-batch's share, back-propagates at once and returns the loss and its
    /// input gradient; other stages keep their input and output for <see cref="Backward"/>.
    /// </summary>
    public (ActivationBatch? Next, (double Loss, byte[] InputGradient)? Done) Forward(StageMessage message, IReadOnlyList<LoadedPiece> pieces)
    {
        var batch = message.Batch;
        Build(pieces);
        EnsureOptimizer(pieces, message.LearningRate);
        DisposeStep(message.Index);
        var input = Input(batch).DetachFromDisposeScope();
        if (Plan.Kind != StagePlan.EmbeddingKind) input.requires_grad_(true);
        var output = Run(input, batch).DetachFromDisposeScope();
        // --distill hidden: the dense model's states go down beside the pruned ones; each layer's term of the loss is
        // added to what the micro-batch carries, so the stage that ends the pass reports the whole loss.
        Tensor? hiddenLoss = null;
        byte[] teacher = [];
        double carried = batch.HiddenLoss;
        bool lossHere = IsBert ? Last : Plan.Kind == StagePlan.HeadKind;
        if (message.HiddenWeight > 0 && Plan.Kind != StagePlan.HeadKind)
        {
            (var dense, hiddenLoss) = HiddenTerm(message, output, pieces);
            // The stage that ends the pass sends no states on.
            using (dense) teacher = lossHere ? [] : Bytes(dense);
            if (hiddenLoss is not null) carried += hiddenLoss.item<float>();
        }
        _steps[message.Index] = (input, output, hiddenLoss);
        if (!lossHere) return (batch with { Hidden = Bytes(output), Shape = output.shape, Teacher = teacher, HiddenLoss = carried }, null);

        double loss;
        using (var scope = NewDisposeScope())
        {
            // Rows are right-padded to the longest: only each row's own predictions count.
            var mean = IsBert ? DistillationLoss(output, batch) : Perplexity.Loss(output, Targets(batch, device), batch.TokenIds.Select(s => s.Length).ToArray());
            var weighted = message.LossWeight == 1 ? mean : mean * message.LossWeight;
            (hiddenLoss is null ? weighted : weighted + hiddenLoss).backward();
            loss = weighted.item<float>() + carried;
        }
        var gradient = Bytes(input.grad!);
        BackwardDone(message.Index, message.Count);
        return (null, (loss, gradient));
    }

    /// <summary>Distillation toward the dense model: mean over the batch of 1 − cos(pruned, dense) sentence embeddings.</summary>
    private Tensor DistillationLoss(Tensor hidden, ActivationBatch batch)
    {
        var pooled = Pool(hidden, batch);
        var target = tensor(batch.Targets, [batch.TokenIds.Length, pooled.shape[1]], ScalarType.Float32, device);
        using var one = 1.0.ToScalar();
        return (pooled * target).sum([-1]).neg().add(one, Shears.Pruning.HeldScalars.One).mean();
    }

    /// <summary>
    /// The backward half of micro-batch <paramref name="index"/>: its output's gradient from the next stage in, this
    /// stage's input gradient out. Parameter gradients accumulate over the step's micro-batches; the optimizer steps
    /// after the last of <paramref name="count"/>.
    /// </summary>
    public byte[] Backward(int index, int count, byte[] outputGradient)
    {
        if (!_steps.TryGetValue(index, out var kept)) throw new InvalidOperationException($"stage of {Plan.Describe()}: backward of micro-batch {index} without its forward");
        var (input, output, hiddenLoss) = kept;
        // A stage with nothing to train and no input gradient to pass on (the embedding, unpruned) has no graph.
        if (output.requires_grad)
        {
            using var scope = NewDisposeScope();
            var gradient = tensor(MemoryMarshal.Cast<byte, float>(outputGradient).ToArray(), output.shape, ScalarType.Float32, device);
            // With a hidden-state term here, the gradient is that of ⟨output, gradient⟩ + the term.
            if (hiddenLoss is null) output.backward([gradient]);
            else (output * gradient).sum().add(hiddenLoss).backward();
        }
        byte[] inputGradient = Plan.Kind == StagePlan.EmbeddingKind || input.grad is null ? [] : Bytes(input.grad);
        BackwardDone(index, count);
        return inputGradient;
    }

    private void BackwardDone(int index, int count)
    {
        DisposeStep(index);
        if (++_backwardDone < count) return;
        _backwardDone = 0;
        _optimizer?.Step();
        _optimizer?.ZeroGrad();
        Trained = true;
    }

    private void EnsureOptimizer(IReadOnlyList<LoadedPiece> pieces, double learningRate)
    {
        if (_optimizer is not null)
        {
            _optimizer.LearningRate = learningRate;
            return;
        }
        // Fine-tuning trains the pruned weights; embeddings, norms and the head stay as they are.
        // The stage's own parameter tensors (FromTensors may have converted what it was given).
        var trainable = pieces.ToDictionary(p => p.Entry.Name, p => StageParameters[p.Entry.Name], StringComparer.Ordinal);
        if (trainable.Count == 0) return;
        foreach (var t in trainable.Values) t.requires_grad_(true);
        var masks = pieces.ToDictionary(p => p.Entry.Name, p => MaskTensor(p), StringComparer.Ordinal);
        _optimizer = new MaskedAdamW(trainable, masks, learningRate: learningRate, weightDecay: 0);
        foreach (var m in masks.Values) m.Dispose();
    }

    private Tensor MaskTensor(LoadedPiece piece)
    {
        var bools = piece.Mask.ToBools();
        return tensor(bools, piece.Entry.Shape, device: device);
    }

    /// <summary>Writes the trained weights back into the pieces' bytes, in each tensor's own dtype.</summary>
    public void EndTraining(IReadOnlyList<LoadedPiece> pieces)
    {
        if (_optimizer is not null && (_stage is not null || _bert is not null))
        {
            foreach (var piece in pieces)
            {
                using var cpu = StageParameters[piece.Entry.Name].detach().cpu().to(ScalarType.Float32).contiguous();
                var floats = cpu.data<float>().ToArray();
                ShardMath.WriteFloats(floats, piece);
            }
        }
        _optimizer?.Dispose();
        _optimizer = null;
        DisposeStage();
    }

    private void DisposeStep(int index)
    {
        if (!_steps.Remove(index, out var kept)) return;
        kept.Input.Dispose();
        kept.Output.Dispose();
        kept.HiddenLoss?.Dispose();
    }

    private void DisposeSteps()
    {
        foreach (int index in _steps.Keys.ToArray()) DisposeStep(index);
        _backwardDone = 0;
    }

    private void DisposeStage()
    {
        DisposeSteps();
        _optimizer?.Dispose();
        _optimizer = null;
        _stage?.Dispose();
        _stage = null;
        _bert?.Dispose();
        _bert = null;
        if (_owned is not null) foreach (var t in _owned.Values) t.Dispose();
        _owned = null;
        DisposeTeacher();
    }

    public void Dispose()
    {
        DisposeStage();
        DropCalibration();
    }
}
