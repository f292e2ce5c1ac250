using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Grains.Shards;

// The quantization phase on the shard: its pieces' weights quantized where they live, the dequantized weights handed to
// the model stage (so the last evaluation measures what the loaders will compute), the packed tensors written.
public sealed partial class ShardGrain
{
    // Per piece, once per loading: null entries are pieces the run does not quantize. The pieces keep their pruned
    // weights (what a restored shard quantizes again, identically), and the stage computes with _dequantized.
    private QuantizedRows?[]? _quantized;
    private byte[]?[]? _dequantized;
    private QuantizedLayout? _layout;

    private bool Quantizes => Assignment.Quantized.Count > 0;

    /// <summary>The shards write the packed layout themselves (safetensors); an ONNX model's graph is rewritten after the shards wrote their weights.</summary>
    private bool WritesQuantized => Quantizes && _manifest!.Format == CheckpointFormat.Safetensors;

    private QuantScheme Scheme => QuantScheme.Parse(Assignment.Spec.Quantize!, Assignment.Spec.GroupSize);

    private QuantizedLayout OutputLayout => _layout ??= QuantizedLayout.Plan(_manifest!, Assignment.Quantized, Scheme);

    private void ForgetQuantization()
    {
        _quantized = null;
        _dequantized = null;
        _layout = null;
    }

    Task<ShardReply<QuantizedTensorError[]>> IShardGrain.QuantizeAsync() => Jobs.Run(compute.RunAsync(() =>
    {
        CheckSources();
        Quantize(withDequantized: _stage is not null);
        return _pieces.Select((piece, i) => (piece, rows: _quantized![i])).Where(x => x.rows is not null)
            .Select(x => new QuantizedTensorError
            {
                Name = x.piece.Entry.Name, Elements = x.piece.Piece.Elements, AbsErrorSum = x.rows!.AbsErrorSum, MaxAbsError = x.rows.MaxAbsError,
            }).ToArray();
    }));

    /// <summary>Quantizes the pieces once per loading (round to nearest, from the masked weights: deterministic).</summary>
    private void Quantize(bool withDequantized)
    {
        if (_quantized is null)
        {
            var scheme = Scheme;
            var names = Assignment.Quantized.ToHashSet(StringComparer.Ordinal);
            // An ONNX weight is stored [in, out] and quantized per output column along its input: as the transpose's rows.
            bool stored = _manifest!.Format == CheckpointFormat.Onnx;
            _quantized = _pieces.Select(piece => !names.Contains(piece.Entry.Name) ? null
                : stored ? QuantizedRows.RoundToNearest(Transpose(ShardMath.Masked(piece), piece.Entry.DType.ElementSize(), piece.Rows, piece.Cols), piece.Entry.DType, checked((int)piece.Cols), checked((int)piece.Rows), scheme, piece.Entry.Name)
                : QuantizedRows.RoundToNearest(ShardMath.Masked(piece), piece.Entry.DType, checked((int)piece.Rows), checked((int)piece.Cols), scheme, piece.Entry.Name)).ToArray();
        }
        if (withDequantized && _dequantized is null)
        {
            bool stored = _manifest!.Format == CheckpointFormat.Onnx;
            _dequantized = _quantized.Select((rows, i) => rows is null ? null
                : stored ? Transpose(rows.DequantizedBytes(), _pieces[i].Entry.DType.ElementSize(), rows.Rows, rows.Columns)
                : rows.DequantizedBytes()).ToArray();
            if (_stage is not null)
            {
                var byPiece = _pieces.Select((p, i) => (p.Entry.Name, Bytes: _dequantized[i])).Where(x => x.Bytes is not null)
                    .ToDictionary(x => x.Name, x => x.Bytes!, StringComparer.Ordinal);
                _stage.UseWeights(byPiece);
            }
        }
    }

    /// <summary>The [cols, rows] transpose of a row-major [rows, cols] matrix of <paramref name="size"/>-byte elements.</summary>
    private static byte[] Transpose(byte[] raw, int size, long rows, long cols)
    {
        var result = new byte[raw.Length];
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++)
                Buffer.BlockCopy(raw, checked((int)((r * cols + c) * size)), result, checked((int)((c * rows + r) * size)), size);
        return result;
    }

    /// <summary>Writes this shard's quantized pieces into the pack-quantized layout, and copies its other tensors to their new offsets.</summary>
    private ShardWriteResult WriteQuantized(string outputDirectory)
    {
        Quantize(withDequantized: false);
        var layout = OutputLayout;
        long total = 0;
        var size = Shears.Pruning.Size.SizeReport.Empty;
        for (int i = 0; i < _pieces.Length; i++)
        {
            var piece = _pieces[i];
            if (_quantized![i] is not { } rows)
            {
                // Pruned but not quantized (a tensor included beyond the blocks' Linear weights): masked, at its new offset.
                var output = layout.Output(piece.Entry.Name);
                var masked = ShardMath.Masked(piece);
                CheckpointOutput.WriteTensorRange(outputDirectory, output, piece.ByteStart, masked);
                total += masked.Length;
                continue;
            }
            // What a bitmask encoding of the pruned piece would take, beside the packed layout written.
            long zeros = rows.ZeroCount();
            size = size.Add(Shears.Pruning.Size.SparseEncoding.Report(piece.Piece.Elements, piece.Piece.Elements - zeros, piece.Entry.DType));
            string module = QuantizedLayout.Module(piece.Entry.Name);
            var packed = layout.Output(module + QuantizedLayout.PackedSuffix);
            var scale = layout.Output(module + QuantizedLayout.ScaleSuffix);
            var packedBytes = rows.PackedBytes();
            var scaleBytes = rows.ScaleBytes();
            CheckpointOutput.WriteTensorRange(outputDirectory, packed, piece.Piece.RowStart * packed.RowByteLength, packedBytes);
            CheckpointOutput.WriteTensorRange(outputDirectory, scale, piece.Piece.RowStart * scale.RowByteLength, scaleBytes);
            total += packedBytes.Length + scaleBytes.Length;
            if (!rows.Scheme.Symmetric)
            {
                var zeroPoint = layout.Output(module + QuantizedLayout.ZeroPointSuffix);
                var words = new int[PackedInt.Words(rows.Rows, rows.Scheme.Bits) * rows.GroupsPerRow];
                PackedInt.PackColumns(rows.ZeroPoints(), rows.Rows, rows.GroupsPerRow, rows.Scheme.Bits, words);
                var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(words.AsSpan());
                // Row blocks start at multiples of the rows one word packs (RunPlanner), so each block owns its words.
                long wordRow = piece.Piece.RowStart / rows.Scheme.PackFactor;
                CheckpointOutput.WriteTensorRange(outputDirectory, zeroPoint, wordRow * zeroPoint.RowByteLength, bytes);
                total += bytes.Length;
            }
        }
        foreach (string name in Assignment.CopyTensors)
        {
            var entry = _manifest!.Get(name);
            CheckpointOutput.CopyTensor(_manifest, entry, outputDirectory, layout.Output(name));
            total += entry.ByteLength;
        }
        return new ShardWriteResult
        {
            BytesWritten = total, Elements = size.Elements, ZeroElements = size.ZeroElements, DenseBytes = size.DenseBytes, SparseBytes = size.SparseBytes,
        };
    }
}
