using System.Diagnostics;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Grains.Runs;

// A quantized --model (compressed-tensors pack-quantized or int-quantized) is read as the dense checkpoint it
// decompresses to, written into the run's state folder on the coordinator's silo before the shards load.
public sealed partial class RunGrain
{
    /// <summary>
    /// For a quantized model that is not to be quantized again, makes the dense layout in the state folder and points the
    /// spec and manifest at it; returns that folder, or null when the model is read as it is.
    /// </summary>
    private string? ReadQuantizedAsDense(ref RunSpec spec, ref CheckpointManifest manifest, string stateDirectory)
    {
        if (spec.Quantize is not null || !RunPlanner.IsQuantized(manifest, out _)) return null;
        DequantizedCheckpoint quantized;
        try { quantized = DequantizedCheckpoint.Read(manifest); }
        catch (CheckpointFormatException e) { throw new RunRejectedException($"--model: {e.Message}"); }
        string dequantized = Path.Combine(stateDirectory, "model");
        quantized.CreateLayout(dequantized);
        manifest = manifests.Get(dequantized);
        spec = spec with { ModelPath = dequantized };
        return dequantized;
    }

    /// <summary>The job's first phase for a quantized model: the dense tensors written, once, before the shards load.</summary>
    private async Task DequantizeModelAsync(Dictionary<string, double> phases, CancellationToken token)
    {
        if (state.State.DequantizedModel is not { } dequantized || state.State.DequantizedWritten) return;
        await SetStatus(s => s with { Phase = "dequantizing the model" });
        var clock = Stopwatch.StartNew();
        var source = DequantizedCheckpoint.Read(Shears.Pruning.ModelFiles.ReadManifest(Path.GetFullPath(Status.Spec!.ModelPath)));
        // File work off the grain's scheduler; written again whole if the coordinator is lost before the flag is.
        await Task.Run(() => source.Fill(dequantized, token), token);
        state.State.DequantizedWritten = true;
        await SaveStateAsync();
        phases["dequantize"] = clock.Elapsed.TotalSeconds;
    }
}
