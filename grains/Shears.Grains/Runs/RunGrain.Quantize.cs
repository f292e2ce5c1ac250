using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Structured;

namespace Shears.Grains.Runs;

// The quantization phase (--quantize): the shards quantize their own tensors and report only their errors; the
// coordinator lays out the compressed output, which the shards then fill.
public sealed partial class RunGrain
{
    /// <summary>
    /// Quantizes every shard's tensors (the last round, after its fine-tuning, before its evaluation); null when the run
    /// does not quantize. GPTQ first runs its calibrated pass layer by layer (unless the round's SparseGPT pruning
    /// quantized jointly); the shards then report the errors of what they hold.
    /// </summary>
    private async Task<IReadOnlyList<QuantizedTensorError>?> QuantizeAsync(CheckpointManifest manifest,
        RunPlan plan, RunSpec spec, int round, int rounds, IReadOnlyList<long[]>? calibration, CancellationToken token)
    {
        if (plan.Quantized.Count == 0) return null;
        await SetStatus(s => s with { Phase = $"round {round}/{rounds}: quantizing ({spec.Quantize}, {spec.QuantMethod})" });
        if (spec.NeedsQuantCalibration && !spec.JointQuantization)
            await new Shears.Engine.Rounds.CalibratedQuantization(Layout(plan), ShardSet(plan))
                .RunAsync(calibration ?? throw new InvalidOperationException("GPTQ needs the calibration sequences"), token);
        // --remove: the masks are final after the round's pruning, so the cuts are known and the shards quantize what
        // the smaller model keeps (planned again from the masks whenever the round runs again).
        var removals = spec.Remove ? Wire((await PlanRemovalAsync(manifest, plan, spec, token))!) : null;
        var parts = await Task.WhenAll(plan.Shards.Select(s =>
            (removals is null ? Shard(s.Index).QuantizeAsync() : Shard(s.Index).QuantizeRemovedAsync(removals)).Complete(Shard(s.Index), token)));
        // Row blocks of one tensor on several shards: their sums add up, their maxima combine.
        var order = plan.Quantized.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
        return parts.SelectMany(p => p).GroupBy(e => e.Name, StringComparer.Ordinal).OrderBy(g => order[g.Key])
            .Select(g => new QuantizedTensorError
            {
                Name = g.Key, Elements = g.Sum(e => e.Elements), AbsErrorSum = g.Sum(e => e.AbsErrorSum), MaxAbsError = g.Max(e => e.MaxAbsError),
            }).ToArray();
    }

    /// <summary>
    /// After the shards wrote an ONNX model's pruned weights: the graph cut (--remove), and its quantized MatMuls
    /// rewritten in place (the graph changes, so this runs where the model file is assembled; the weights are read from
    /// the shared output folder, not sent). A removed model is quantized after the cut, whole, as a run given it would.
    /// </summary>
    private static void FinishOnnxOutput(CheckpointManifest manifest, RunPlan plan, RunSpec spec, RemovalPlan? removal, string folder)
    {
        if (manifest.Format != CheckpointFormat.Onnx) return;
        CutOnnxOutput(manifest, removal, folder);
        if (plan.Quantized.Count == 0) return;
        string model = Path.Combine(folder, manifest.Files[0].FileName);
        var quantized = removal is null ? plan.Quantized : RunPlanner.QuantizedWhole(Shears.Pruning.ModelFiles.ReadManifest(model), spec);
        Shears.Pruning.Onnx.OnnxQuantizedWriter.Write(model, model, quantized.ToArray(), QuantScheme.Parse(spec.Quantize!, spec.GroupSize));
    }

    /// <summary>The output's files in <paramref name="folder"/>, for the shards to fill: the input's layout, or the quantized one.</summary>
    private static void CreateOutputLayout(CheckpointManifest manifest, RunPlan plan, RunSpec spec, string folder)
    {
        if (plan.Quantized.Count == 0 || manifest.Format == CheckpointFormat.Onnx)
        {
            // The shards write their pruned tensors (and copy the others they were given): the layout leaves those out.
            CheckpointOutput.CreateLayout(manifest, folder, plan.Shards.SelectMany(s => s.Pieces.Select(p => p.Tensor).Concat(s.CopyTensors)).ToHashSet(StringComparer.Ordinal));
            return;
        }
        var layout = QuantizedLayout.Plan(manifest, plan.Quantized, QuantScheme.Parse(spec.Quantize!, spec.GroupSize), spec.ActOrder);
        layout.Create(folder, RunPlanner.UnquantizedLinears(manifest, plan.Quantized));
    }
}
