using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

// --remove with --quantize on the shard: quantized as the smaller model holds its weights (groups over the kept columns),
// the stage computing with them expanded back to full size, and the smaller model's tensors packed from its written files.
public sealed partial class ShardGrain
{
    // The removal's cuts by tensor while the shard quantizes as the smaller model; null otherwise.
    private Dictionary<string, TensorCut>? _cuts;

    Task<ShardReply<QuantizedTensorError[]>> IShardGrain.QuantizeRemovedAsync(TensorRemoval[] removals) => Jobs.Run(compute.RunAsync(() =>
    {
        CheckSources();
        ForgetQuantization();
        _cuts = removals.ToDictionary(r => r.Tensor, r => new TensorCut(r.Tensor, r.Axis, r.Removed), StringComparer.Ordinal);
        Quantize(withDequantized: _stage is not null);
        return QuantizedErrors();
    }));

    /// <summary>
    /// With a removal: the stage's frozen Linear weights dequantized as the smaller model quantized whole holds them
    /// (a removal cuts only the pattern's tensors, which are pieces; the others are quantized as they are).
    /// </summary>
    private IEnumerable<(string Name, byte[] Bytes)> RemovedFrozenWeights()
    {
        if (_cuts is null || _stage is null) yield break;
        var manifest = _manifest!;
        bool stored = manifest.Format == CheckpointFormat.Onnx;
        foreach (var entry in _stage.Frozen.Where(e => RunPlanner.IsQuantizedLinear(manifest, e)))
        {
            var raw = CheckpointReader.ReadTensor(manifest, entry);
            int rows = checked((int)entry.Shape[0]), cols = checked((int)entry.Shape[1]), size = entry.DType.ElementSize();
            var quantized = stored
                ? QuantizedRows.RoundToNearest(Transpose(raw, size, rows, cols), entry.DType, cols, rows, Scheme, entry.Name)
                : QuantizedRows.RoundToNearest(raw, entry.DType, rows, cols, Scheme, entry.Name);
            var bytes = quantized.DequantizedBytes();
            yield return (entry.Name, stored ? Transpose(bytes, size, quantized.Rows, quantized.Columns) : bytes);
        }
    }

    Task<ShardReply<ShardWriteResult>> IShardGrain.WriteQuantizedRemovedAsync(string removedDirectory, string outputDirectory, string[] tensors, string[] quantized) =>
        Jobs.Run(WriteQuantizedRemovedAsync(removedDirectory, outputDirectory, tensors, quantized));

    private async Task<ShardWriteResult> WriteQuantizedRemovedAsync(string removedDirectory, string outputDirectory, string[] tensors, string[] quantized)
    {
        var assignment = Assignment;
        foreach (var interceptor in interceptors) await interceptor.BeforeWriteAsync(this.GetPrimaryKeyString());
        var result = await compute.RunAsync(() =>
        {
            // The smaller model as a run given it as --model would read it: the same layout, the same rounding.
            var removed = CheckpointReader.ReadManifest(removedDirectory);
            var layout = QuantizedLayout.Plan(removed, quantized, Scheme);
            var set = quantized.ToHashSet(StringComparer.Ordinal);
            long total = 0;
            var size = SizeReport.Empty;
            foreach (string name in tensors)
            {
                var entry = removed.Get(name);
                if (!set.Contains(name))
                {
                    CheckpointOutput.CopyTensor(removed, entry, outputDirectory, layout.Output(name));
                    total += entry.ByteLength;
                    continue;
                }
                var rows = QuantizedRows.RoundToNearest(CheckpointReader.ReadTensor(removed, entry), entry.DType,
                    checked((int)entry.Shape[0]), checked((int)entry.Shape[1]), Scheme, name);
                size = size.Add(SparseEncoding.Report(entry.ElementCount, entry.ElementCount - rows.ZeroCount(), entry.DType));
                total += WritePacked(outputDirectory, layout, name, rows, 0);
            }
            return WriteResult(total, size);
        });
        ShearsMetrics.BytesWritten.Add(result.BytesWritten, new KeyValuePair<string, object?>("run", assignment.RunId));
        return result;
    }
}
