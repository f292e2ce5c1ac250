using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Structured;

namespace Shears.Grains.Runs;

// --remove with --quantize on a safetensors checkpoint: the smaller model's headers, index and config are laid out in a
// folder inside the output's (its tensors are never written there), the packed layout is planned over them as a run
// given the smaller model as --model would plan it, and each shard cuts its own tensors and packs them straight into
// the output (the same layout, config and rounding, so the same bytes, with each weight written once).
public sealed partial class RunGrain
{
    /// <summary>Where the smaller model's headers are laid out: inside the output's temporary folder, left out of it once packed.</summary>
    private const string RemovedStaging = ".removed";

    /// <summary>The output of a removal, filled by the shards: the smaller model, packed when the run quantizes.</summary>
    private async Task<ShardWriteResult[]> WriteRemovedOutputAsync(CheckpointManifest manifest, RunPlan plan, RunSpec spec, RemovalPlan removal, string folder, CancellationToken token)
    {
        bool packs = plan.Quantized.Count > 0 && manifest.Format == CheckpointFormat.Safetensors;
        string target = packs ? Path.Combine(folder, RemovedStaging) : folder;
        if (packs && Directory.Exists(target)) Directory.Delete(target, recursive: true);
        CreateRemovedLayout(manifest, plan, removal, target);
        var removals = Wire(removal);
        var removedLayers = removal.RemovedLayers.ToArray();
        if (!packs)
            return await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).WriteRemovedAsync(target, removals, removedLayers).Complete(Shard(s.Index), token)));

        var removed = CheckpointReader.ReadManifest(target);
        var quantized = RunPlanner.QuantizedWhole(removed, spec);
        QuantizedLayout.Plan(removed, quantized, QuantScheme.Parse(spec.Quantize!, spec.GroupSize)).Create(folder, RunPlanner.UnquantizedLinears(removed, quantized));
        var names = quantized.ToArray();
        var packed = await Task.WhenAll(plan.Shards.Select(s =>
            Shard(s.Index).WriteQuantizedRemovedAsync(target, folder, removals, removedLayers, names).Complete(Shard(s.Index), token)));
        Directory.Delete(target, recursive: true);
        return packed;
    }
}
