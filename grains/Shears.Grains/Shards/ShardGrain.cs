using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
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

/// <summary>
/// Holds the weights of one shard in memory (never as grain state), computes its statistics and
/// applies the coordinator's decisions. All tensor work runs on the silo's compute executor.
/// </summary>
[ShardPlacement]
public sealed class ShardGrain(
    ComputeExecutor compute, ComputeDevice device, ManifestCache manifests, ILocalSiloDetails silo,
    Microsoft.Extensions.Options.IOptions<ShearsOptions> options, ILogger<ShardGrain> logger)
    : Grain, IShardGrain
{
    private ShardAssignment? _assignment;
    private CheckpointManifest? _manifest;
    private LoadedPiece[] _pieces = [];
    private StageRunner? _stage;

    // The selection statistics of the round under way, per piece, while its mask and weights stay as they were:
    // the histograms answer CountAsync, and the counts let ApplyAsync skip its checking pass, instead of more passes
    // over the weights. Cleared by everything that changes masks or weights; each entry also checks the mask count.
    private readonly Dictionary<(int Piece, int Level, uint Prefix), KeptHistogram> _histograms = [];
    private readonly Dictionary<int, (uint Threshold, long Equal, long MaskCount)> _equal = [];

    private sealed record KeptHistogram(long[] Counts, bool LowZero, long MaskCount);

    private long CachedHistogramElements => options.Value.CachedHistogramElements;

    private void ForgetStatistics()
    {
        _histograms.Clear();
        _equal.Clear();
    }

    private ShardAssignment Assignment => _assignment ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} has not been loaded on {silo.SiloAddress}");

    async Task<ShardInfo> IShardGrain.LoadAsync(ShardAssignment assignment)
    {
        var stopwatch = Stopwatch.StartNew();
        ForgetStatistics();
        bool reused = _assignment is { } loaded && _pieces.Length == assignment.Pieces.Count && SameData(loaded, assignment);
        // Kept weights were read before, not now, unless they were trained and must be read again.
        bool read = !reused || _stage is { Trained: true };
        if (reused)
        {
            // Already holding these weights: only go back to the committed masks.
            await compute.RunAsync(() => RestoreMasks(assignment));
            _assignment = assignment;
        }
        else
        {
            _assignment = null;
            _stage?.Dispose();
            _stage = null;
            foreach (var piece in _pieces) piece.Dispose();
            _pieces = [];
            (_manifest, _pieces, var first) = await compute.RunAsync(() => Load(assignment));
            foreach (var (piece, kept) in first) _histograms[(piece, 0, 0)] = kept;
            if (assignment.Stage is { } plan)
                _stage = await compute.RunAsync(() => BuildStage(assignment, plan));
            _assignment = assignment;
        }
        _stage?.Reset();
        long bytes = _pieces.Sum(p => (long)p.ByteLength);
        if (read) ShearsMetrics.BytesRead.Add(bytes, new KeyValuePair<string, object?>("run", assignment.RunId));
        ShearsMetrics.Shard(assignment.RunId, this.GetPrimaryKeyString(), _pieces.Sum(p => p.Mask.CountSet()));
        logger.LogInformation("Shard {Shard} loaded {Pieces} pieces ({Bytes} bytes) in {Seconds:F2}s", this.GetPrimaryKeyString(), _pieces.Length, bytes, stopwatch.Elapsed.TotalSeconds);
        return new ShardInfo
        {
            Silo = silo.SiloAddress.ToString(),
            Elements = _pieces.Sum(p => p.Piece.Elements),
            BytesRead = bytes,
            MaskedPerPiece = _pieces.Select(p => p.Mask.CountSet()).ToArray(),
            // Only progressive allocation ranks layers by mean |w|: skip the pass otherwise.
            AbsSumPerPiece = assignment.Spec.Scope == RunOptions.Scopes.Progressive ? _pieces.Select(p => AbsSum(p)).ToArray() : new double[_pieces.Length],
        };
    }

    private StageRunner BuildStage(ShardAssignment assignment, StagePlan plan)
    {
        var manifest = _manifest!;
        var own = _pieces.Select(p => p.Entry.Name).ToHashSet(StringComparer.Ordinal);
        var frozen = plan.Tensors.Where(n => !own.Contains(n))
            .ToDictionary(n => n, n => (manifest.Get(n), CheckpointReader.ReadTensor(manifest, manifest.Get(n))), StringComparer.Ordinal);
        if (plan.Model == StagePlan.BertModel)
        {
            var encoder = manifests.Encoder(manifest.PathOf(manifest.Files[0].FileName));
            return new StageRunner(plan, null, device.Device, frozen, encoder.Config, encoder.Names);
        }
        var config = Shears.Pruning.Models.LlamaConfig.Load(manifest.Root);
        return new StageRunner(plan, config, device.Device, frozen);
    }

    // Every assignment arrives as a copy: compared by content, or a shard that kept its weights would reload them.
    private static bool SameData(ShardAssignment a, ShardAssignment b) =>
        a.RunId == b.RunId && a.ModelPath == b.ModelPath && a.Pieces.SequenceEqual(b.Pieces) && a.Spec.SameAs(b.Spec);

    private void RestoreMasks(ShardAssignment assignment)
    {
        if (_stage is { Trained: true })
        {
            // The weights changed since the committed round (fine-tuning, SparseGPT): start again from the
            // checkpoint's bytes and the round's persisted weights.
            var fresh = Load(assignment).Pieces;
            for (int i = 0; i < _pieces.Length; i++)
            {
                _pieces[i].Dispose();
                _pieces[i] = fresh[i];
            }
            return;
        }
        // The bytes are the checkpoint's (no step writes into them unless it trains): only the masks go back.
        for (int i = 0; i < _pieces.Length; i++)
            _pieces[i].Mask = assignment.RestoreRound > 0
                ? BitMask.FromBytes(File.ReadAllBytes(MaskPath(assignment, i, assignment.RestoreRound)), _pieces[i].Piece.Elements)
                : new BitMask(_pieces[i].Piece.Elements);
    }

    /// <summary>
    /// Reads (or maps) the assignment's pieces and refuses NaN. A large mapped piece of a magnitude run with no mask yet
    /// is read once for both: its first histogram of round 1 is counted while checking, and kept for that round (NaN
    /// and +Inf fall in the top buckets, which send the piece through the exact check).
    /// </summary>
    private (CheckpointManifest Manifest, LoadedPiece[] Pieces, List<(int Piece, KeptHistogram Kept)> Histograms) Load(ShardAssignment assignment)
    {
        var first = new List<(int, KeptHistogram)>();
        var manifest = manifests.Get(assignment.ModelPath);
        var spec = assignment.Spec;
        bool scored = spec.Pattern == RunOptions.Patterns.Unstructured && spec.Method is RunOptions.Methods.Magnitude or RunOptions.Methods.Random;
        // Runs that never change weights read them in place from a map of the checkpoint; fine-tuning, calibrated
        // methods and head scoring hold copies of their own.
        bool mapped = spec.FinetuneSteps == 0 && !spec.NeedsCalibration && spec.Pattern != RunOptions.Patterns.Heads;
        var pieces = new LoadedPiece[assignment.Pieces.Count];
        try
        {
            for (int i = 0; i < pieces.Length; i++)
            {
                var piece = assignment.Pieces[i];
                var entry = manifest.Get(piece.Tensor);
                int size = entry.DType.ElementSize();
                int length = checked((int)(piece.Elements * size));
                long byteStart = piece.RowStart * piece.RowElements * size;
                long elementOffset = piece.RowStart * piece.RowElements;
                var mask = new BitMask(piece.Elements);
                string? weights = null;
                if (assignment.RestoreRound > 0)
                {
                    string path = MaskPath(assignment, i, assignment.RestoreRound);
                    mask = BitMask.FromBytes(File.ReadAllBytes(path), piece.Elements);
                    // A fine-tuned round persisted its weights beside its masks.
                    weights = Path.ChangeExtension(path, ".weights");
                    if (!File.Exists(weights)) weights = null;
                }
                var method = scored ? spec.Method : null;
                if (mapped && weights is null)
                {
                    var map = MappedRange.Map(manifest, entry, byteStart, length);
                    pieces[i] = new LoadedPiece(piece, entry, null, map, mask, method, spec.Seed);
                    if (pieces[i].KeysFromBytes && assignment.RestoreRound == 0 && piece.Elements >= CachedHistogramElements)
                    {
                        var counts = new long[RadixSelect.Buckets];
                        bool lowZero = RadixSelect.CheckedHistogramOfWeights(map.Span, entry.DType, mask, 0, counts, entry.Name, elementOffset);
                        first.Add((i, new KeptHistogram(counts, lowZero, 0)));
                        continue;
                    }
                    // NaN is refused whatever the method, before any round.
                    ScoreKeys.CheckNoNaN(map.Span, entry.DType, entry.Name, elementOffset);
                    continue;
                }
                // Every byte is read into it, from the checkpoint or from the committed round's trained weights: no need
                // to clear it first.
                var raw = GC.AllocateUninitializedArray<byte>(length);
                using var trained = weights is null ? null : File.OpenHandle(weights);
                if (trained is not null && RandomAccess.GetLength(trained) != length)
                    throw new InvalidDataException($"{weights} holds {RandomAccess.GetLength(trained)} bytes, expected {length}");
                for (int at = 0; at < raw.Length; at += IoChunkBytes)
                {
                    var chunk = raw.AsSpan(at, Math.Min(IoChunkBytes, raw.Length - at));
                    if (trained is null) CheckpointReader.ReadTensorRange(manifest, entry, byteStart + at, chunk);
                    else if (RandomAccess.Read(trained, chunk, at) != chunk.Length) throw new InvalidDataException($"{weights} ended early at byte {at}");
                    // Checked while the chunk is still in cache.
                    ScoreKeys.CheckNoNaN(chunk, entry.DType, entry.Name, elementOffset + at / size);
                }
                pieces[i] = new LoadedPiece(piece, entry, raw, null, mask, method, spec.Seed);
            }
            return (manifest, pieces, first);
        }
        catch
        {
            foreach (var piece in pieces) piece?.Dispose();
            throw;
        }
    }

    /// <summary>Bytes read or written at a time: a multiple of 64 elements of any dtype, small enough to stay in cache.</summary>
    private const int IoChunkBytes = 4 << 20;

    /// <summary>Σ|w| over the piece (progressive allocation ranks layers by mean |w|).</summary>
    private static double AbsSum(LoadedPiece piece)
    {
        int size = piece.Entry.DType.ElementSize();
        long n = piece.Piece.Elements;
        var scratch = new uint[RadixSelect.ChunkKeys];
        double sum = 0;
        for (long start = 0; start < n; start += scratch.Length)
        {
            var keys = scratch.AsSpan(0, (int)Math.Min(scratch.Length, n - start));
            ScoreKeys.Magnitude(piece.Bytes.Slice((int)(start * size), keys.Length * size), piece.Entry.DType, keys, piece.Entry.Name, piece.ElementOffset + start);
            double partial = 0;
            foreach (uint key in keys) partial += ScoreKeys.ToScore(key);
            sum += partial;
        }
        return sum;
    }

    Task<HistogramResult> IShardGrain.HistogramAsync(HistogramRequest request)
    {
        _ = Assignment;
        return compute.RunAsync(() => Histogram(request));
    }

    private HistogramResult Histogram(HistogramRequest request)
    {
        CheckSources();
        var histogram = new long[RadixSelect.Buckets];
        bool lowBitsZero = true;
        for (int i = 0; i < _pieces.Length; i++)
        {
            var piece = _pieces[i];
            if (piece.Piece.Group != request.Group || !piece.Scored) continue;
            if (AddKept(i, request.Level, request.Prefix, histogram, out bool keptLowZero))
            {
                lowBitsZero &= keptLowZero;
                continue;
            }
            if (piece.Piece.Elements < CachedHistogramElements)
            {
                lowBitsZero &= piece.Histogram(request.Level, request.Prefix, histogram);
                continue;
            }
            var own = new long[RadixSelect.Buckets];
            bool lowZero = piece.Histogram(request.Level, request.Prefix, own);
            _histograms[(i, request.Level, request.Prefix)] = new KeptHistogram(own, lowZero, piece.Mask.CountSet());
            for (int b = 0; b < own.Length; b++) histogram[b] += own[b];
            lowBitsZero &= lowZero;
        }
        return new HistogramResult { Counts = histogram, LowBitsZero = lowBitsZero };
    }

    /// <summary>Adds piece <paramref name="i"/>'s histogram: the one kept for this round while it still describes the piece, else counted.</summary>
    private bool KeptOrCounted(int i, int level, uint prefix, Span<long> histogram) =>
        AddKept(i, level, prefix, histogram, out bool lowZero) ? lowZero : _pieces[i].Histogram(level, prefix, histogram);

    private bool AddKept(int i, int level, uint prefix, Span<long> histogram, out bool lowZero)
    {
        lowZero = false;
        if (!_histograms.TryGetValue((i, level, prefix), out var kept) || kept.MaskCount != _pieces[i].Mask.CountSet()) return false;
        for (int b = 0; b < kept.Counts.Length; b++) histogram[b] += kept.Counts[b];
        lowZero = kept.LowZero;
        return true;
    }

    /// <summary>
    /// The unmasked keys of piece <paramref name="i"/> below and at <paramref name="threshold"/>, read from the
    /// histograms of this round when they still describe the piece: the top-digit histogram gives everything below
    /// the threshold's top digit; the low-digit one of that prefix, or a piece whose keys all have zero low bits
    /// (bf16), gives the rest.
    /// </summary>
    private bool CountFromHistograms(int i, uint threshold, out long less, out long equal)
    {
        less = equal = 0;
        long maskCount = -1;
        bool Valid(KeptHistogram h) => h.MaskCount == (maskCount = maskCount < 0 ? _pieces[i].Mask.CountSet() : maskCount);
        if (!_histograms.TryGetValue((i, 0, 0), out var top) || !Valid(top)) return false;
        uint digit = threshold >> 16, low = threshold & 0xFFFF;
        long below = 0;
        for (int b = 0; b < digit; b++) below += top.Counts[b];
        if (_histograms.TryGetValue((i, 1, digit), out var lower) && Valid(lower))
        {
            long lowBelow = 0;
            for (int d = 0; d < low; d++) lowBelow += lower.Counts[d];
            (less, equal) = (below + lowBelow, lower.Counts[low]);
            return true;
        }
        if (!top.LowZero) return false;
        (less, equal) = low == 0 ? (below, top.Counts[digit]) : (below + top.Counts[digit], 0);
        return true;
    }

    Task<ThresholdCounts> IShardGrain.CountAsync(int group, uint threshold)
    {
        _ = Assignment;
        return compute.RunAsync(() => Count(group, threshold));
    }

    private ThresholdCounts Count(int group, uint threshold)
    {
        var less = new long[_pieces.Length];
        var equal = new long[_pieces.Length];
        for (int i = 0; i < _pieces.Length; i++)
        {
            var piece = _pieces[i];
            if (piece.Piece.Group != group || !piece.Scored) continue;
            if (!CountFromHistograms(i, threshold, out less[i], out equal[i]))
                piece.CountLessAndEqual(threshold, out less[i], out equal[i]);
            _equal[i] = (threshold, equal[i], piece.Mask.CountSet());
        }
        return new ThresholdCounts { Less = less, Equal = equal };
    }

    async Task<ShardRoundResult> IShardGrain.ApplyAsync(MaskDecision decision)
    {
        _ = Assignment;
        var stopwatch = Stopwatch.StartNew();
        await compute.RunAsync(() =>
        {
            for (int i = 0; i < _pieces.Length; i++)
            {
                if (decision.Thresholds[i] is not uint threshold) continue;
                var piece = _pieces[i];
                long available = _equal.TryGetValue(i, out var known) && known.Threshold == threshold && known.MaskCount == piece.Mask.CountSet() ? known.Equal : -1;
                piece.ApplyThreshold(threshold, decision.Ties[i], available);
            }
            ForgetStatistics();
            CheckSources();
        });
        _stage?.Invalidate();
        return Result(stopwatch);
    }

    async Task<ShardRoundResult> IShardGrain.ApplyLocalAsync(LocalRoundRequest request)
    {
        var stopwatch = Stopwatch.StartNew();
        var spec = Assignment.Spec;
        await compute.RunAsync(() =>
        {
            // Kept statistics stay: each entry checks its piece's mask count, and masks only grow, so the pieces decided
            // here fall out of them while pieces of split groups, applied next, keep theirs.
            if (spec.Pattern == RunOptions.Patterns.Heads)
            {
                ApplyHeads(request.Sparsity);
                return;
            }
            for (int i = 0; i < _pieces.Length; i++)
            {
                if (request.TargetMasked[i] < 0) continue;
                var piece = _pieces[i];
                switch (spec.Pattern)
                {
                    case RunOptions.Patterns.Unstructured:
                        long more = request.TargetMasked[i] - piece.Mask.CountSet();
                        int index = i;
                        if (more > 0) LocalSelection.MaskSmallest(piece.FillKeys, piece.Mask, more, (level, prefix, into) => KeptOrCounted(index, level, prefix, into),
                            (threshold, ties, equal) => piece.ApplyThreshold(threshold, ties, equal));
                        break;
                    case "2:4" or "4:8":
                        var (n, m) = spec.NmPattern;
                        piece.Mask = new Shears.Pruning.Calibration.NmPattern(n, m).MagnitudeMask(piece.Bytes, piece.Entry.DType, piece.Rows, piece.Cols, piece.Entry.Name, piece.Mask);
                        break;
                    case RunOptions.Patterns.Rows or RunOptions.Patterns.Columns:
                        // rows = output neurons, columns = input features, whatever the storage order.
                        bool outputsAreColumns = _manifest!.OutputColumns.Contains(piece.Entry.Name);
                        var axis = (spec.Pattern == RunOptions.Patterns.Rows) != outputsAreColumns ? StructuredAxis.Rows : StructuredAxis.Columns;
                        var masked = Masked(piece);
                        var norms = StructuredPruning.Norms(masked, piece.Entry.DType, piece.Rows, piece.Cols, axis, spec.Norm, piece.Entry.Name);
                        StructuredPruning.MaskSmallest(norms, piece.Mask, piece.Rows, piece.Cols, axis, request.Sparsity);
                        break;
                    default:
                        throw new NotSupportedException($"--pattern {spec.Pattern} is not decided by shards");
                }
            }
            CheckSources();
        });
        _stage?.Invalidate();
        return Result(stopwatch);
    }

    private HeadLayout Layout => Assignment.Heads ?? throw new InvalidOperationException("--pattern heads needs the attention layout from config.json");

    private HeadWeights Weights((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer) =>
        new(layer.Q.Writable(), layer.K.Writable(), layer.V.Writable(), layer.O.Writable(), layer.Q.Entry.DType, Layout.Hidden, Layout.Heads, Layout.KvHeads, Layout.HeadDim);

    private double[] Scores((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer) =>
        HeadPruning.Scores(Weights(layer), Assignment.Spec.HeadScore == RunOptions.HeadScores.Qkvo ? HeadScore.QkvoL1 : HeadScore.QueryL1);

    /// <summary>Layer-wise: each layer keeps its own share of heads.</summary>
    private void ApplyHeads(double sparsity)
    {
        foreach (var layer in AttentionLayers())
        {
            var already = PrunedHeads(layer.Q, Layout);
            MaskHeads(layer, HeadPruning.SelectHeads(Scores(layer), sparsity, already).Union(already).ToArray());
        }
    }

    private void MaskHeads((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer, int[] heads)
    {
        var masks = HeadPruning.MaskHeads(Weights(layer), heads);
        Or(layer.Q.Mask, masks.Q);
        Or(layer.K.Mask, masks.K);
        Or(layer.V.Mask, masks.V);
        Or(layer.O.Mask, masks.O);
    }

    Task<HeadScores> IShardGrain.HeadScoresAsync()
    {
        // A shard that re-activated without its weights must say so, not report no heads.
        _ = Assignment;
        return compute.RunAsync(HeadScores);
    }

    private HeadScores HeadScores()
    {
        var layers = AttentionLayers().ToArray();
        return new HeadScores
        {
            Layers = layers.Select(l => l.Q.Entry.Name).ToArray(),
            Scores = layers.Select(Scores).ToArray(),
            Pruned = layers.Select(l => PrunedHeads(l.Q, Layout)).ToArray(),
        };
    }

    async Task<ShardRoundResult> IShardGrain.PruneHeadsAsync(HeadDecision decision)
    {
        var stopwatch = Stopwatch.StartNew();
        await compute.RunAsync(() =>
        {
            ForgetStatistics();
            foreach (var layer in AttentionLayers())
            {
                if (!decision.Heads.TryGetValue(layer.Q.Entry.Name, out var heads) || heads.Length == 0) continue;
                MaskHeads(layer, heads.Union(PrunedHeads(layer.Q, Layout)).ToArray());
            }
        });
        _stage?.Invalidate();
        return Result(stopwatch);
    }

    private static int[] PrunedHeads(LoadedPiece q, HeadLayout layout)
    {
        var result = new List<int>();
        long headElements = (long)layout.HeadDim * q.Cols;
        for (int h = 0; h < layout.Heads; h++)
        {
            bool all = true;
            for (long e = h * headElements; e < (h + 1) * headElements && all; e++) all = q.Mask[e];
            if (all) result.Add(h);
        }
        return result.ToArray();
    }

    private IEnumerable<(LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O)> AttentionLayers()
    {
        foreach (var q in _pieces.Where(p => p.Entry.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)))
        {
            string prefix = q.Entry.Name[..^"q_proj.weight".Length];
            LoadedPiece Find(string suffix) => _pieces.FirstOrDefault(p => p.Entry.Name == prefix + suffix)
                ?? throw new InvalidOperationException($"--pattern heads: tensor '{prefix + suffix}' must be pruned with '{q.Entry.Name}'");
            yield return (q, Find("k_proj.weight"), Find("v_proj.weight"), Find("o_proj.weight"));
        }
    }

    private static void Or(BitMask target, BitMask source)
    {
        if (target.Length != source.Length) throw new InvalidOperationException("mask length mismatch");
        for (long i = 0; i < source.Length; i++) if (source[i]) target.Set(i);
    }

    private static byte[] Masked(LoadedPiece piece) => ShardMath.Masked(piece);

    private ShardRoundResult Result(Stopwatch stopwatch)
    {
        var masked = _pieces.Select(p => p.Mask.CountSet()).ToArray();
        ShearsMetrics.Shard(Assignment.RunId, this.GetPrimaryKeyString(), masked.Sum());
        return new ShardRoundResult { MaskedPerPiece = masked, Seconds = stopwatch.Elapsed.TotalSeconds };
    }

    Task IShardGrain.CommitRoundAsync(RoundResult result) => compute.RunAsync(() =>
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
    });

    /// <summary>Fails the step when a checkpoint file this shard reads through a map changed since the load.</summary>
    private void CheckSources()
    {
        foreach (var piece in _pieces) piece.CheckSource();
    }

    private static string MaskPath(ShardAssignment assignment, int piece, int round) =>
        Path.Combine(assignment.StateDirectory, $"shard-{assignment.ShardIndex:D5}", $"piece-{piece:D5}.round-{round}.mask");

    async Task<ShardWriteResult> IShardGrain.WriteAsync(string outputDirectory)
    {
        var assignment = Assignment;
        var result = await compute.RunAsync(() =>
        {
            CheckSources();
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
            return new ShardWriteResult
            {
                BytesWritten = total, Elements = size.Elements, ZeroElements = size.ZeroElements,
                DenseBytes = size.DenseBytes, SparseBytes = size.SparseBytes,
            };
        });
        ShearsMetrics.BytesWritten.Add(result.BytesWritten, new KeyValuePair<string, object?>("run", assignment.RunId));
        return result;
    }

    async Task<NllResult> IShardGrain.EvaluateAsync(ActivationBatch batch)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var (next, nll) = await compute.RunAsync(() => stage.Evaluate(batch, _pieces));
        if (nll is not null) return nll;
        return await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").EvaluateAsync(next!);
    }

    async Task<TrainStepResult> IShardGrain.TrainStepAsync(ActivationBatch batch, double learningRate)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var (next, done) = await compute.RunAsync(() =>
        {
            ForgetStatistics();
            return stage.Forward(batch, _pieces, learningRate);
        });
        if (done is not null) return done;
        var downstream = await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").TrainStepAsync(next!, learningRate);
        var gradient = await compute.RunAsync(() => stage.Backward(downstream.InputGradient));
        return downstream with { InputGradient = gradient };
    }

    async Task IShardGrain.EndTrainingAsync()
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        // Magnitude keys are computed from the bytes when read, so the next round scores the trained weights.
        await compute.RunAsync(() =>
        {
            ForgetStatistics();
            stage.EndTraining(_pieces);
        });
    }

    async Task IShardGrain.CollectCalibrationAsync(ActivationBatch batch)
    {
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        switch (stage.Plan.Kind)
        {
            case StagePlan.EmbeddingKind:
                var (next, _) = await compute.RunAsync(() => stage.Evaluate(batch, _pieces));
                await GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}").CollectCalibrationAsync(next!);
                break;
            case StagePlan.LayerKind:
                await compute.RunAsync(() => stage.Collect(batch));
                break;
        }
    }

    async Task<ShardRoundResult> IShardGrain.PruneCalibratedAsync(int round, double sparsity)
    {
        var stopwatch = Stopwatch.StartNew();
        var stage = _stage ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} runs no model stage");
        var spec = Assignment.Spec;
        var next = await compute.RunAsync(() =>
        {
            ForgetStatistics();
            return stage.PruneCalibrated(_pieces, spec.Method, spec.NmPattern, sparsity);
        });
        if (stage.Plan.Next >= 0)
        {
            var following = GrainFactory.GetGrain<IShardGrain>($"{Assignment.RunId}/{stage.Plan.Next}");
            foreach (var batch in next) await following.CollectCalibrationAsync(batch);
        }
        return Result(stopwatch);
    }

    Task IShardGrain.ReleaseAsync()
    {
        DropEverything();
        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    /// <summary>A grain that deactivates without ReleaseAsync (idle, or its run's coordinator lost) still unmaps its weights.</summary>
    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        DropEverything();
        return Task.CompletedTask;
    }

    private void DropEverything()
    {
        ForgetStatistics();
        _stage?.Dispose();
        _stage = null;
        foreach (var piece in _pieces) piece.Dispose();
        _pieces = [];
        _manifest = null;
    }
}
