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

// Statistics for the coordinator's selection, and the decisions it sends back.
public sealed partial class ShardGrain
{
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
}
