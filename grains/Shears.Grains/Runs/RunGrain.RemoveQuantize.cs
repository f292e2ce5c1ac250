using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Structured;

namespace Shears.Grains.Runs;

// --remove with --quantize on a safetensors checkpoint: the smaller model is written first, into a folder inside the
// output's, and then packed from its files as a run given it as --model would pack it (the same layout, config and
// rounding, so the same bytes); the shards share the packing.
public sealed partial class RunGrain
{
    /// <summary>Where the smaller model is written before it is packed: inside the output's temporary folder, left out of it once packed.</summary>
    private const string RemovedStaging = ".removed";

    /// <summary>The output of a removal, filled by the shards: the smaller model, packed when the run quantizes.</summary>
    private async Task<ShardWriteResult[]> WriteRemovedOutputAsync(CheckpointManifest manifest, RunPlan plan, RunSpec spec, RemovalPlan removal, string folder, CancellationToken token)
    {
        bool packs = plan.Quantized.Count > 0 && manifest.Format == CheckpointFormat.Safetensors;
        string target = packs ? Path.Combine(folder, RemovedStaging) : folder;
        if (packs && Directory.Exists(target)) Directory.Delete(target, recursive: true);
        CreateRemovedLayout(manifest, plan, removal, target);
        var removals = Wire(removal);
        var written = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).WriteRemovedAsync(target, removals, removal.RemovedLayers.ToArray()).Complete(Shard(s.Index), token)));
        if (!packs) return written;

        var removed = CheckpointReader.ReadManifest(target);
        var quantized = RunPlanner.QuantizedWhole(removed, spec);
        QuantizedLayout.Plan(removed, quantized, QuantScheme.Parse(spec.Quantize!, spec.GroupSize)).Create(folder, RunPlanner.UnquantizedLinears(removed, quantized));
        var shares = RunPlanner.SpreadByBytes(removed.Tensors, plan.Shards.Count).Select(s => s.ToArray()).ToArray();
        var names = quantized.ToArray();
        var packed = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).WriteQuantizedRemovedAsync(target, folder, shares[s.Index], names).Complete(Shard(s.Index), token)));
        Directory.Delete(target, recursive: true);
        return packed;
    }
}
