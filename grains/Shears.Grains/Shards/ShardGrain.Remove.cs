using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Grains.Diagnostics;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

// --remove on the shard: the slices its masks cover whole, and its tensors written without them.
public sealed partial class ShardGrain
{
    Task<ShardReply<TensorRemoval[]>> IShardGrain.RemovalAsync()
    {
        var selection = Selection;
        var manifest = _manifest!;
        return Jobs.Run(compute.RunAsync(() => selection.RemovalCuts(name => RemovalAxis(manifest, name))
            .Select(c => new TensorRemoval { Tensor = c.Tensor, Axis = c.Axis, Removed = c.Removed }).ToArray()));
    }

    /// <summary>The axis a tensor loses its removed units along, in its storage order.</summary>
    internal static int? RemovalAxis(CheckpointManifest manifest, string name) =>
        manifest.Format == CheckpointFormat.Safetensors ? ShardSelection.RemovalAxis(name)
        // ONNX MatMul weights are [in, out]: the FFN-in weight holds its neurons in columns, the FFN-out in rows; the query,
        // key and value weights hold their heads in columns, the attention output in rows.
        : manifest.LayerRoles.TryGetValue(name, out var r) ? r.Role switch { "intermediate" or "query" or "key" or "value" => 1, "output" or "attention.output" => 0, _ => null } : null;

    Task<ShardReply<ShardWriteResult>> IShardGrain.WriteRemovedAsync(string outputDirectory, TensorRemoval[] removals, int[] removedLayers) =>
        Jobs.Run(WriteRemovedAsync(outputDirectory, removals, removedLayers));

    private async Task<ShardWriteResult> WriteRemovedAsync(string outputDirectory, TensorRemoval[] removals, int[] removedLayers)
    {
        var manifest = _manifest!;
        // An ONNX graph changes shape as a whole: the shards write their masked weights in place, the coordinator cuts the file.
        if (manifest.Format == CheckpointFormat.Onnx) return await WriteAsync(outputDirectory);
        var assignment = Assignment;
        foreach (var interceptor in interceptors) await interceptor.BeforeWriteAsync(this.GetPrimaryKeyString());
        var result = await compute.RunAsync(() =>
        {
            CheckSources();
            var cuts = removals.Select(r => new TensorCut(r.Tensor, r.Axis, r.Removed)).ToArray();
            var layout = RemovedLayout.Plan(manifest, cuts, name => LlamaRemoval.Renamed(name, removedLayers));
            long total = 0;
            var size = SizeReport.Empty;
            foreach (var piece in _pieces)
            {
                // A piece of a removed layer leaves the model.
                if (layout.Output(piece.Entry.Name) is not { } place) continue;
                var bytes = ShardSelection.RemovedBytes(piece, layout.Cuts.GetValueOrDefault(piece.Entry.Name));
                CheckpointOutput.WriteTensor(outputDirectory, place, bytes);
                size = size.Add(SparseEncoding.Count(bytes, piece.Entry.DType));
                total += bytes.Length;
                if (_stage is not null) piece.ReleaseResident();
            }
            foreach (string name in assignment.CopyTensors)
            {
                var entry = manifest.Get(name);
                if (layout.Output(name) is not { } output) continue;
                if (layout.Cuts.TryGetValue(name, out var cut))
                    CheckpointOutput.WriteTensor(outputDirectory, output, cut.Apply(CheckpointReader.ReadTensor(manifest, entry), entry.Shape, entry.DType.ElementSize()));
                else
                    CheckpointOutput.CopyTensor(manifest, entry, outputDirectory, output);
                total += output.ByteLength;
            }
            CheckSources();
            return WriteResult(total, size);
        });
        ShearsMetrics.BytesWritten.Add(result.BytesWritten, new KeyValuePair<string, object?>("run", assignment.RunId));
        return result;
    }
}
