using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Grains.Shards;

// --distill hidden: the dense model's module for this stage runs beside the pruned one, on the dense model's own hidden
// states, so every layer can match its output to the dense model's without the coordinator holding any states.
internal sealed partial class StageRunner
{
    private LlamaStage? _teacherStage;
    private Shears.Pruning.Encoders.BertStage? _teacherBert;
    private Dictionary<string, Tensor>? _teacherOwned;

    /// <summary>The dense model's output of this stage for the dense model's input (token ids at the embedding), without gradients.</summary>
    private Tensor TeacherForward(ActivationBatch batch, IReadOnlyList<LoadedPiece> pieces)
    {
        using var noGrad = no_grad();
        var input = Plan.Kind == StagePlan.EmbeddingKind ? Targets(batch, device) : Floats(batch.Teacher, batch.Shape);
        // Nothing of this stage is pruned or trained: its own module is the dense one.
        if (pieces.Count == 0 && _weights is null) return Forward(_stage, _bert, input, batch);
        BuildTeacher(pieces);
        return Forward(_teacherStage, _teacherBert, input, batch);
    }

    /// <summary>The stage's module over the checkpoint's own bytes: the pieces hold pruned (and trained) weights.</summary>
    private void BuildTeacher(IReadOnlyList<LoadedPiece> pieces)
    {
        if (_teacherStage is not null || _teacherBert is not null) return;
        _teacherOwned = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var entry in frozen.Concat(pieces.Select(p => p.Entry)))
            _teacherOwned[entry.Name] = LlamaWeights.ToFloat32(entry, into => CheckpointReader.ReadTensor(manifest, entry, into)).to(device);
        (_teacherStage, _teacherBert) = Construct(_teacherOwned);
    }

    /// <summary>
    /// The hidden-state term of a training micro-batch at this stage: the dense model's output (passed on as the next
    /// stage's teacher input) and, at a layer that computes (not one taken out by --pattern layers), its weighted
    /// relative error, which the stage's backward adds to the gradient from the stages after it.
    /// </summary>
    private (Tensor Dense, Tensor? Loss) HiddenTerm(StageMessage message, Tensor output, IReadOnlyList<LoadedPiece> pieces)
    {
        using var scope = NewDisposeScope();
        // An embedding that nothing pruned or trained computes from the same token ids what the dense one does.
        var dense = Plan.Kind == StagePlan.EmbeddingKind && pieces.Count == 0 && _weights is null
            ? output.detach()
            : TeacherForward(message.Batch, pieces);
        Tensor? loss = null;
        // A layer split in two (attention, MLP) has its term where the layer's output is: at the MLP.
        if (Plan.Kind == StagePlan.LayerKind && Plan.Part != StagePlan.AttentionPart && !_bypassed)
        {
            using var weight = message.HiddenWeight.ToScalar();
            loss = HiddenStateLoss.RelativeErrorSum(output, dense, PaddingMask(message.Batch)).mul(weight).MoveToOuterDisposeScope();
        }
        return (dense.MoveToOuterDisposeScope(), loss);
    }

    private Tensor Floats(byte[] bytes, long[] shape) =>
        tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray(), shape, ScalarType.Float32, device);

    private void DisposeTeacher()
    {
        _teacherStage?.Dispose();
        _teacherStage = null;
        _teacherBert?.Dispose();
        _teacherBert = null;
        if (_teacherOwned is not null) foreach (var t in _teacherOwned.Values) t.Dispose();
        _teacherOwned = null;
    }
}
