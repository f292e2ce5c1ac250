using Shears.Pruning.Selection;

namespace Shears.Engine.Shards;

// Statistics for the coordinator's exact selection, and the threshold decisions it sends back.
public sealed partial class ShardSelection
{
    // The selection statistics of the round under way, per piece, while its mask and weights stay as they were: the
    // histograms answer the counts, and the counts let Apply skip its checking pass, instead of more passes over the
    // weights. Cleared by everything that changes masks or weights; each entry also checks the piece's mask count.
    private readonly Dictionary<(int Piece, int Level, uint Prefix), KeptHistogram> _histograms = [];
    private readonly Dictionary<int, (uint Threshold, long Equal, long MaskCount)> _equal = [];

    private sealed record KeptHistogram(long[] Counts, bool LowZero, long MaskCount);

    /// <summary>Drops the statistics kept for the round under way: for whatever changes masks or weights outside selection.</summary>
    public void ForgetStatistics()
    {
        _histograms.Clear();
        _equal.Clear();
    }

    public GroupHistogram[] Histograms(IReadOnlyList<HistogramQuery> queries) => queries.Select(Histogram).ToArray();

    public GroupHistogram Histogram(HistogramQuery query)
    {
        CheckSources();
        var histogram = new long[RadixSelect.Buckets];
        bool lowBitsZero = true;
        for (int i = 0; i < Pieces.Length; i++)
        {
            var piece = Pieces[i];
            if (piece.Piece.Group != query.Group || !piece.Scored) continue;
            if (AddKept(i, query.Level, query.Prefix, histogram, out bool keptLowZero))
            {
                lowBitsZero &= keptLowZero;
                continue;
            }
            if (piece.Piece.Elements < _load.CachedHistogramElements)
            {
                lowBitsZero &= piece.Histogram(query.Level, query.Prefix, histogram);
                continue;
            }
            var own = new long[RadixSelect.Buckets];
            bool lowZero = piece.Histogram(query.Level, query.Prefix, own);
            _histograms[(i, query.Level, query.Prefix)] = new KeptHistogram(own, lowZero, piece.Mask.CountSet());
            for (int b = 0; b < own.Length; b++) histogram[b] += own[b];
            lowBitsZero &= lowZero;
        }
        return new GroupHistogram(histogram, lowBitsZero);
    }

    /// <summary>Adds piece <paramref name="i"/>'s histogram: the one kept for this round while it still describes the piece, else counted.</summary>
    private bool KeptOrCounted(int i, int level, uint prefix, Span<long> histogram) =>
        AddKept(i, level, prefix, histogram, out bool lowZero) ? lowZero : Pieces[i].Histogram(level, prefix, histogram);

    private bool AddKept(int i, int level, uint prefix, Span<long> histogram, out bool lowZero)
    {
        lowZero = false;
        if (!_histograms.TryGetValue((i, level, prefix), out var kept) || kept.MaskCount != Pieces[i].Mask.CountSet()) return false;
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
        bool Valid(KeptHistogram h) => h.MaskCount == (maskCount = maskCount < 0 ? Pieces[i].Mask.CountSet() : maskCount);
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

    public PieceCounts[] Counts(IReadOnlyList<CountQuery> queries) => queries.Select(q => Count(q.Group, q.Threshold)).ToArray();

    public PieceCounts Count(int group, uint threshold)
    {
        var less = new long[Pieces.Length];
        var equal = new long[Pieces.Length];
        for (int i = 0; i < Pieces.Length; i++)
        {
            var piece = Pieces[i];
            if (piece.Piece.Group != group || !piece.Scored) continue;
            if (!CountFromHistograms(i, threshold, out less[i], out equal[i]))
                piece.CountLessAndEqual(threshold, out less[i], out equal[i]);
            _equal[i] = (threshold, equal[i], piece.Mask.CountSet());
        }
        return new PieceCounts(less, equal);
    }

    /// <summary>Masks below each piece's threshold and its share of the ties; returns masked elements per piece.</summary>
    public long[] Apply(ThresholdDecision decision)
    {
        for (int i = 0; i < Pieces.Length; i++)
        {
            if (decision.Thresholds[i] is not uint threshold) continue;
            var piece = Pieces[i];
            long available = _equal.TryGetValue(i, out var known) && known.Threshold == threshold && known.MaskCount == piece.Mask.CountSet() ? known.Equal : -1;
            piece.ApplyThreshold(threshold, decision.Ties[i], available);
        }
        ForgetStatistics();
        CheckSources();
        return MaskedPerPiece;
    }
}
