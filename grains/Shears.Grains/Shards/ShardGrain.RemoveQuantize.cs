using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Grains.Diagnostics;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

// --remove with --quantize on the shard: quantized as the smaller model holds its weights (groups over the kept columns),
// the stage computing with them expanded back to full size, and the smaller model's tensors cut and packed into the output.
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

    Task<ShardReply<ShardWriteResult>> IShardGrain.WriteQuantizedRemovedAsync(string removedDirectory, string outputDirectory,
        TensorRemoval[] removals, int[] removedLayers, string[] quantized) =>
        Jobs.Run(WriteQuantizedRemovedAsync(removedDirectory, outputDirectory, removals, removedLayers, quantized));

    /// <summary>
    /// Writes this shard's tensors as the smaller model packed: each cut as the removal says (a removed layer's left out),
    /// the quantized ones rounded as a run given the smaller model as --model would round them, straight into the packed
    /// layout. <paramref name="removedDirectory"/> holds only the smaller model's headers, index and config (its tensors
    /// are never written): the layout is planned from them as that run would plan it.
    /// </summary>
    private async Task<ShardWriteResult> WriteQuantizedRemovedAsync(string removedDirectory, string outputDirectory,
        TensorRemoval[] removals, int[] removedLayers, string[] quantized)
    {
        var assignment = Assignment;
        var manifest = _manifest!;
        foreach (var interceptor in interceptors) await interceptor.BeforeWriteAsync(this.GetPrimaryKeyString());
        var result = await compute.RunAsync(() =>
        {
            CheckSources();
            var removed = CheckpointReader.ReadManifest(removedDirectory);
            var layout = QuantizedLayout.Plan(removed, quantized, Scheme);
            var set = quantized.ToHashSet(StringComparer.Ordinal);
            var cuts = removals.ToDictionary(r => r.Tensor, r => new TensorCut(r.Tensor, r.Axis, r.Removed), StringComparer.Ordinal);
            long total = 0;
            var size = SizeReport.Empty;

            void Write(string name, byte[] bytes)
            {
                var entry = removed.Get(name);
                if (!set.Contains(name))
                {
                    CheckpointOutput.WriteTensor(outputDirectory, layout.Output(name), bytes);
                    total += bytes.Length;
                    return;
                }
                var rows = QuantizedRows.RoundToNearest(bytes, entry.DType, checked((int)entry.Shape[0]), checked((int)entry.Shape[1]), Scheme, name);
                size = size.Add(SparseEncoding.Report(entry.ElementCount, entry.ElementCount - rows.ZeroCount(), entry.DType));
                total += WritePacked(outputDirectory, layout, name, rows, 0);
            }

            foreach (var piece in _pieces)
            {
                if (LlamaRemoval.Renamed(piece.Entry.Name, removedLayers) is not { } name) continue;
                if (piece.Piece.RowStart != 0 || piece.Piece.Elements != piece.Entry.ElementCount)
                    throw new InvalidOperationException($"tensor '{piece.Entry.Name}' is split over shards; a removal cuts whole tensors");
                Write(name, ShardSelection.RemovedBytes(piece, cuts.GetValueOrDefault(piece.Entry.Name)));
                if (_stage is not null) piece.ReleaseResident();
            }
            foreach (string source in assignment.CopyTensors)
            {
                if (LlamaRemoval.Renamed(source, removedLayers) is not { } name) continue;
                var entry = manifest.Get(source);
                if (cuts.TryGetValue(source, out var cut))
                    Write(name, cut.Apply(CheckpointReader.ReadTensor(manifest, entry), entry.Shape, entry.DType.ElementSize()));
                else if (set.Contains(name))
                    Write(name, CheckpointReader.ReadTensor(manifest, entry));
                else
                {
                    CheckpointOutput.CopyTensor(manifest, entry, outputDirectory, layout.Output(name));
                    total += entry.ByteLength;
                }
            }
            CheckSources();
            return WriteResult(total, size);
        });
        ShearsMetrics.BytesWritten.Add(result.BytesWritten, new KeyValuePair<string, object?>("run", assignment.RunId));
        return result;
    }
}
