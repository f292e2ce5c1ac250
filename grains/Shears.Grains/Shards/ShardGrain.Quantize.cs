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
    // SparseGPT's joint mode wrote the dequantized weights into the pieces themselves: the stage already computes with them.
    private bool _piecesDequantized;

    /// <summary>GPTQ's results depend on the calibration pass: they are computed there (or restored), never rounded here.</summary>
    private bool ByGptq => Assignment.Spec.QuantMethod == RunOptions.QuantMethods.Gptq;

    private bool Quantizes => Assignment.Quantized.Count > 0;

    /// <summary>The shards write the packed layout themselves (safetensors); an ONNX model's graph is rewritten after the shards wrote their weights.</summary>
    private bool WritesQuantized => Quantizes && _manifest!.Format == CheckpointFormat.Safetensors;

    private QuantScheme Scheme => QuantScheme.Parse(Assignment.Spec.Quantize!, Assignment.Spec.GroupSize);

    private QuantizedLayout OutputLayout => _layout ??= QuantizedLayout.Plan(_manifest!, Assignment.Quantized, Scheme, Assignment.Spec.ActOrder);

    private void ForgetQuantization()
    {
        // A stage that computed with quantized weights is built again from the pruned ones.
        if (_dequantized is not null) _stage?.UseWeights(null);
        _quantized = null;
        _dequantized = null;
        _piecesDequantized = false;
        _layout = null;
        _cuts = null;
    }

    private IReadOnlySet<string> QuantizedNames => Assignment.Quantized.ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// The layer's calibrated pruning; in the last round of a joint run (<see cref="RunSpec.JointQuantization"/>) it
    /// quantizes too, and the pieces hold the dequantized weights from then on.
    /// </summary>
    private List<ActivationBatch> PruneCalibrated(StageRunner stage, RunSpec spec, int round, double sparsity, long[]? targetMasked)
    {
        bool joint = spec.JointQuantization && round == spec.Rounds && Quantizes;
        ForgetQuantization();
        var (next, rows) = stage.PruneCalibrated(_pieces, spec.Method, spec.NmPattern, sparsity, joint ? Scheme : null, joint ? QuantizedNames : null, targetMasked);
        if (joint)
        {
            _quantized = rows;
            _piecesDequantized = true;
        }
        return next;
    }

    /// <summary>GPTQ on the layer from its calibration inputs; the stage then computes with the dequantized weights and passes its inputs on.</summary>
    private List<ActivationBatch> QuantizeCalibrated(StageRunner stage)
    {
        if (!Quantizes) return stage.PassOnCalibration(_pieces);
        ForgetQuantization();
        var spec = Assignment.Spec;
        _quantized = stage.QuantizeCalibrated(_pieces, QuantizedNames, Scheme, spec.ActOrder);
        Quantize(withDequantized: true);
        return stage.PassOnCalibration(_pieces);
    }

    Task<ShardReply<QuantizedTensorError[]>> IShardGrain.QuantizeAsync() => Jobs.Run(compute.RunAsync(() =>
    {
        CheckSources();
        Quantize(withDequantized: _stage is not null);
        return QuantizedErrors();
    }));

    /// <summary>Per quantized piece, the error of its dequantized weights over the elements it quantized.</summary>
    private QuantizedTensorError[] QuantizedErrors() =>
        _pieces.Select((piece, i) => (piece, rows: _quantized![i])).Where(x => x.rows is not null)
            .Select(x => new QuantizedTensorError
            {
                Name = x.piece.Entry.Name, Elements = (long)x.rows!.Rows * x.rows.Columns, AbsErrorSum = x.rows!.AbsErrorSum, MaxAbsError = x.rows.MaxAbsError,
            }).ToArray();

    /// <summary>Quantizes the pieces once per loading (round to nearest, from the masked weights: deterministic).</summary>
    private void Quantize(bool withDequantized)
    {
        if (_quantized is null)
        {
            // Never rounded to nearest in place of GPTQ: the round that computes them runs again after a reload.
            var held = QuantizedNames;
            if (ByGptq && _pieces.Any(p => held.Contains(p.Entry.Name)))
                throw new InvalidOperationException($"shard {this.GetPrimaryKeyString()} holds no GPTQ results: the calibrated quantization pass has not run since it was loaded");
            var names = Assignment.Quantized.ToHashSet(StringComparer.Ordinal);
            _quantized = _pieces.Select(piece => !names.Contains(piece.Entry.Name) ? null : RoundToNearest(piece)).ToArray();
        }
        if (withDequantized && _dequantized is null && !_piecesDequantized)
        {
            _dequantized = _quantized.Select((rows, i) => rows is null ? null : Dequantized(_pieces[i], rows)).ToArray();
            if (_stage is not null)
            {
                var byPiece = _pieces.Select((p, i) => (p.Entry.Name, Bytes: _dequantized[i])).Where(x => x.Bytes is not null)
                    .ToDictionary(x => x.Name, x => x.Bytes!, StringComparer.Ordinal);
                foreach (var (name, bytes) in RemovedFrozenWeights()) byPiece[name] = bytes;
                _stage.UseWeights(byPiece);
            }
        }
    }

    /// <summary>
    /// A piece's weights rounded to nearest from its masked ones; with a removal, without its removed slices (null when
    /// the removal takes the whole piece, as with a removed layer).
    /// </summary>
    private QuantizedRows? RoundToNearest(LoadedPiece piece)
    {
        var bytes = ShardMath.Masked(piece);
        long rows = piece.Rows, cols = piece.Cols;
        int size = piece.Entry.DType.ElementSize();
        if (_cuts is not null)
        {
            if (piece.Mask.CountSet() == piece.Mask.Length) return null;
            if (_cuts.GetValueOrDefault(piece.Entry.Name) is { } cut)
            {
                var smaller = cut.Shape([rows, cols]);
                if (smaller[0] == 0 || smaller[1] == 0) return null;
                bytes = cut.Apply(bytes, [rows, cols], size);
                (rows, cols) = (smaller[0], smaller[1]);
            }
        }
        // An ONNX weight is stored [in, out] and quantized per output column along its input: as the transpose's rows.
        return _manifest!.Format == CheckpointFormat.Onnx
            ? QuantizedRows.RoundToNearest(Transpose(bytes, size, rows, cols), piece.Entry.DType, checked((int)cols), checked((int)rows), Scheme, piece.Entry.Name)
            : QuantizedRows.RoundToNearest(bytes, piece.Entry.DType, checked((int)rows), checked((int)cols), Scheme, piece.Entry.Name);
    }

    /// <summary>The dequantized weights of a piece in its stored order and full shape (zeros in removed slices).</summary>
    private byte[] Dequantized(LoadedPiece piece, QuantizedRows rows)
    {
        int size = piece.Entry.DType.ElementSize();
        var bytes = _manifest!.Format == CheckpointFormat.Onnx ? Transpose(rows.DequantizedBytes(), size, rows.Rows, rows.Columns) : rows.DequantizedBytes();
        return _cuts?.GetValueOrDefault(piece.Entry.Name) is { } cut ? cut.Expand(bytes, [piece.Rows, piece.Cols], size) : bytes;
    }

    private static string QuantizedPath(ShardAssignment assignment, int piece, int round) =>
        Path.Combine(assignment.StateDirectory, $"shard-{assignment.ShardIndex:D5}", $"piece-{piece:D5}.round-{round}.gptq");

    /// <summary>
    /// With the round's masks: GPTQ's results, which a reloaded shard could not compute again without the calibration
    /// pass, so that a shard lost after the last round is committed writes the same output.
    /// </summary>
    private void PersistQuantized(ShardAssignment assignment, int round)
    {
        if (!ByGptq || _quantized is null) return;
        for (int i = 0; i < _pieces.Length; i++)
        {
            if (_quantized[i] is not { } rows) continue;
            string path = QuantizedPath(assignment, i, round);
            using (var file = new FileStream(path + ".tmp", FileMode.Create, FileAccess.Write))
                rows.WriteTo(file);
            File.Move(path + ".tmp", path, overwrite: true);
        }
    }

    /// <summary>After a load at a committed round: the GPTQ results persisted with it, when that round quantized.</summary>
    private bool RestoreQuantized(ShardAssignment assignment)
    {
        if (!ByGptq || !Quantizes || assignment.RestoreRound < 1) return false;
        var names = QuantizedNames;
        var quantized = _pieces.Select(p => names.Contains(p.Entry.Name)).ToArray();
        var paths = _pieces.Select((_, i) => QuantizedPath(assignment, i, assignment.RestoreRound)).ToArray();
        if (!quantized.Any(q => q) || paths.Where((_, i) => quantized[i]).Any(p => !File.Exists(p))) return false;
        var scheme = Scheme;
        _quantized = _pieces.Select((piece, i) =>
        {
            if (!quantized[i]) return null;
            using var file = File.OpenRead(paths[i]);
            var rows = QuantizedRows.ReadFrom(file, scheme, piece.Entry.DType, paths[i]);
            if ((long)rows.Rows * rows.Columns != piece.Piece.Elements)
                throw new InvalidDataException($"{paths[i]}: [{rows.Rows}, {rows.Columns}] quantized rows for '{piece.Entry.Name}', whose piece holds {piece.Piece.Elements} elements");
            return rows;
        }).ToArray();
        // The joint mode's pieces were restored with their trained (dequantized) weights.
        _piecesDequantized = assignment.Spec.JointQuantization && assignment.RestoreRound == assignment.Spec.Rounds;
        return true;
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
            total += WritePacked(outputDirectory, layout, piece.Entry.Name, rows, piece.Piece.RowStart);
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

    /// <summary>
    /// Writes the packed weights, scales (and group index, zero points) of a row block of <paramref name="weight"/>
    /// starting at <paramref name="rowStart"/> into <paramref name="layout"/>'s files; the bytes written.
    /// </summary>
    private static long WritePacked(string outputDirectory, QuantizedLayout layout, string weight, QuantizedRows rows, long rowStart)
    {
        string module = QuantizedLayout.Module(weight);
        var packed = layout.Output(module + QuantizedLayout.PackedSuffix);
        var scale = layout.Output(module + QuantizedLayout.ScaleSuffix);
        var packedBytes = rows.PackedBytes();
        var scaleBytes = rows.ScaleBytes();
        CheckpointOutput.WriteTensorRange(outputDirectory, packed, rowStart * packed.RowByteLength, packedBytes);
        CheckpointOutput.WriteTensorRange(outputDirectory, scale, rowStart * scale.RowByteLength, scaleBytes);
        long total = packedBytes.Length + scaleBytes.Length;
        if (layout.GroupIndex && rowStart == 0)
        {
            // One [in] index per weight: every row block has the same (GPTQ holds a weight whole, on one shard).
            var groupIndex = rows.GroupIndexBytes() ?? throw new InvalidOperationException($"tensor '{weight}' was quantized without activation order, but the layout has its weight_g_idx");
            CheckpointOutput.WriteTensorRange(outputDirectory, layout.Output(module + QuantizedLayout.GroupIndexSuffix), 0, groupIndex);
            total += groupIndex.Length;
        }
        if (!rows.Scheme.Symmetric)
        {
            var zeroPoint = layout.Output(module + QuantizedLayout.ZeroPointSuffix);
            var words = new int[PackedInt.Words(rows.Rows, rows.Scheme.Bits) * rows.GroupsPerRow];
            PackedInt.PackColumns(rows.ZeroPoints(), rows.Rows, rows.GroupsPerRow, rows.Scheme.Bits, words);
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(words.AsSpan());
            // Row blocks start at multiples of the rows one word packs (RunPlanner), so each block owns its words.
            long wordRow = rowStart / rows.Scheme.PackFactor;
            CheckpointOutput.WriteTensorRange(outputDirectory, zeroPoint, wordRow * zeroPoint.RowByteLength, bytes);
            total += bytes.Length;
        }
        return total;
    }
}
