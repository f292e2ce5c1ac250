using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Grains.Compute;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Heads;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

// The round store (masks persisted between rounds) and the export of the shard's tensors.
public sealed partial class ShardGrain
{
    Task<ShardReply<bool>> IShardGrain.CommitRoundAsync(RoundResult result) => Jobs.Run(compute.RunAsync(() =>
    {
        var assignment = Assignment;
        int round = result.Round;
        ShearsMetrics.RoundGauges(assignment.RunId, round, result.TargetSparsity, result.AchievedSparsity, result.Threshold);
        for (int i = 0; i < _pieces.Length; i++)
        {
            string path = MaskPath(assignment, i, round);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            string temp = path + ".tmp";
            using (var file = File.OpenHandle(temp, FileMode.Create, FileAccess.Write))
                RandomAccess.Write(file, _pieces[i].Mask.Bytes, 0);
            File.Move(temp, path, overwrite: true);
            if (_stage is { Trained: true })
            {
                string weights = Path.ChangeExtension(path, ".weights");
                File.WriteAllBytes(weights + ".tmp", _pieces[i].Writable());
                File.Move(weights + ".tmp", weights, overwrite: true);
                if (round > 2) File.Delete(Path.ChangeExtension(MaskPath(assignment, i, round - 2), ".weights"));
            }
            // The previous round stays until the coordinator has recorded this one: a crash in between reloads it.
            if (round > 2) File.Delete(MaskPath(assignment, i, round - 2));
        }
        PersistQuantized(assignment, round);
        return true;
    }));

    /// <summary>Fails the step when a checkpoint file this shard reads through a map changed since the load.</summary>
    private void CheckSources()
    {
        foreach (var piece in _pieces) piece.CheckSource();
    }

    private static string MaskPath(ShardAssignment assignment, int piece, int round) =>
        Path.Combine(assignment.StateDirectory, $"shard-{assignment.ShardIndex:D5}", $"piece-{piece:D5}.round-{round}.mask");

    private static ShardWriteResult WriteResult(long bytesWritten, SizeReport size) => new()
    {
        BytesWritten = bytesWritten, Elements = size.Elements, ZeroElements = size.ZeroElements,
        DenseBytes = size.DenseBytes, SparseBytes = size.SparseBytes,
    };

    Task<ShardReply<ShardWriteResult>> IShardGrain.WriteAsync(string outputDirectory) => Jobs.Run(WriteAsync(outputDirectory));

    private async Task<ShardWriteResult> WriteAsync(string outputDirectory)
    {
        var assignment = Assignment;
        foreach (var interceptor in interceptors) await interceptor.BeforeWriteAsync(this.GetPrimaryKeyString());
        var result = await compute.RunAsync(() =>
        {
            CheckSources();
            if (WritesQuantized)
            {
                var quantized = WriteQuantized(outputDirectory);
                CheckSources();
                return quantized;
            }
            long total = 0;
            var size = SizeReport.Empty;
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(IoChunkBytes);
            try
            {
                foreach (var piece in _pieces)
                {
                    // Chunk by chunk, while each is in cache: copied into the buffer with masked elements as +0.0 (the
                    // piece's own bytes stay as they are, so a retried write writes the same), zeros counted (the encoded
                    // size follows from them, SparseEncoding.Report), written.
                    int elementSize = piece.Entry.DType.ElementSize();
                    int chunkElements = IoChunkBytes / elementSize;
                    long nonZero = 0;
                    for (long first = 0; first < piece.Piece.Elements; first += chunkElements)
                    {
                        var bytes = ShardMath.MaskedRange(piece, first, (int)Math.Min(chunkElements, piece.Piece.Elements - first), buffer, out long chunkNonZero);
                        nonZero += chunkNonZero;
                        CheckpointOutput.WriteTensorRange(outputDirectory, piece.Entry, piece.ByteStart + first * elementSize, bytes);
                        total += bytes.Length;
                    }
                    size = size.Add(SparseEncoding.Report(piece.Piece.Elements, nonZero, piece.Entry.DType));
                    if (_stage is not null) piece.ReleaseResident();
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
            foreach (string name in assignment.CopyTensors)
            {
                var entry = _manifest!.Get(name);
                CheckpointOutput.CopyTensor(_manifest, entry, outputDirectory);
                total += entry.ByteLength;
            }
            // A file changed during the export leaves a mixed output: the run fails, and it is never renamed into place.
            CheckSources();
            return WriteResult(total, size);
        });
        ShearsMetrics.BytesWritten.Add(result.BytesWritten, new KeyValuePair<string, object?>("run", assignment.RunId));
        return result;
    }
}
