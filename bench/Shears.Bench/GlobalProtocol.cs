using Shears.Pruning.Checkpoints;
using System.Diagnostics;
using Shears.Pruning.Masks;
using Shears.Pruning.Selection;

namespace Shears.Bench;

/// <summary>One shard's piece: a contiguous run of the weights, its keys and its mask.</summary>
internal sealed class BenchShard(long start, uint[] keys)
{
    public long Start { get; } = start;
    public uint[] Keys { get; } = keys;
    public BitMask Mask { get; set; } = new(keys.Length);
}

/// <summary>Seconds per phase of one global selection, and what it decided.</summary>
internal sealed record ProtocolRun
{
    public double Level0 { get; init; }
    public double Level1 { get; init; }
    public double Merge { get; init; }
    public double Count { get; init; }
    public double Ties { get; init; }
    public double Apply { get; init; }
    public double Total { get; init; }
    public int Levels { get; init; }
    public uint ThresholdKey { get; init; }
    public long Masked { get; init; }
    public long HistogramBytes { get; init; }
    public long CountBytes { get; init; }
    public long[] TiesPerShard { get; init; } = [];
}

/// <summary>
/// The coordinator's global selection (RunGrain's unstructured round) with the grain calls
/// replaced by direct calls on the shards' keys: histograms per level from every shard, merge,
/// GlobalThresholdSearch, counts at the threshold, ties shared out in position order, apply.
/// </summary>
internal static class GlobalProtocol
{
    /// <remarks>
    /// As RunGrain does, the shards' lowBitsZero answers are passed on, so a bf16 scope is exact after
    /// the top digit; <paramref name="forwardLowBitsZero"/> false measures the two-level protocol instead.
    /// </remarks>
    /// <param name="fill">
    /// When given, each shard's keys are not read from <see cref="BenchShard.Keys"/> but computed from its weights chunk
    /// by chunk in every pass, as shard grains do (without their cached histograms: the count pass is always run).
    /// </param>
    /// <param name="histogramOf">With <paramref name="fill"/>: the shard's histogram read straight from its weights
    /// (shard, level, prefix, histogram → low bits zero), as shard grains do for mapped fp32/bf16 weights.</param>
    /// <param name="weightsOf">Shard i's fp32/bf16 weight bytes and dtype, when counting and masking read the weight
    /// bits (RadixSelect.CountLessAndEqualOfWeights, ApplyThresholdToWeights) as shard grains do.</param>
    public static ProtocolRun Run(IReadOnlyList<BenchShard> shards, long count, int threads, bool forwardLowBitsZero = true,
        IReadOnlyList<KeyFiller>? fill = null, Func<int, int, uint, long[], bool>? histogramOf = null,
        Func<int, (byte[] Bytes, int Offset, int Length, TensorDType DType)>? weightsOf = null)
    {
        int s = shards.Count;
        double level0 = 0, level1 = 0, merge = 0;
        long histogramBytes = 0;
        int levels = 0;
        long start = Stopwatch.GetTimestamp();

        var search = new GlobalThresholdSearch(count);
        while (!search.IsComplete)
        {
            int level = search.Level;
            uint prefix = search.Prefix;
            var histograms = new long[s][];
            var lowBitsZero = new bool[s];
            long t = Stopwatch.GetTimestamp();
            Timing.ForEach(s, threads, i =>
            {
                // As the shard side of selection (ShardSelection.Histogram): a fresh histogram per request.
                var histogram = new long[RadixSelect.Buckets];
                lowBitsZero[i] = histogramOf is not null ? histogramOf(i, level, prefix, histogram)
                    : fill is null ? RadixSelect.Histogram(shards[i].Keys, shards[i].Mask, 0, level, prefix, histogram)
                    : RadixSelect.Histogram(shards[i].Keys.Length, fill[i], shards[i].Mask, 0, level, prefix, histogram);
                histograms[i] = histogram;
            });
            if (level == 0) level0 += Timing.Seconds(t);
            else level1 += Timing.Seconds(t);
            histogramBytes += (long)s * RadixSelect.Buckets * sizeof(long);
            levels++;

            t = Stopwatch.GetTimestamp();
            search.Submit(RadixSelect.MergeHistograms(histograms), forwardLowBitsZero && lowBitsZero.All(z => z));
            merge += Timing.Seconds(t);
        }
        uint threshold = search.ThresholdKey;

        long c = Stopwatch.GetTimestamp();
        var less = new long[s];
        var equal = new long[s];
        Timing.ForEach(s, threads, i =>
        {
            if (weightsOf is not null)
            {
                var w = weightsOf(i);
                RadixSelect.CountLessAndEqualOfWeights(w.Bytes.AsSpan(w.Offset, w.Length), w.DType, shards[i].Mask, threshold, out less[i], out equal[i]);
            }
            else if (fill is null) RadixSelect.CountLessAndEqual(shards[i].Keys, shards[i].Mask, threshold, out less[i], out equal[i]);
            else RadixSelect.CountLessAndEqual(shards[i].Keys.Length, fill[i], shards[i].Mask, threshold, out less[i], out equal[i]);
        });
        double countSeconds = Timing.Seconds(c);
        // ThresholdCounts: one Less and one Equal per piece.
        long countBytes = (long)s * 2 * sizeof(long);

        long a = Stopwatch.GetTimestamp();
        long[] ties = RadixSelect.AssignTies(equal, search.TiesNeeded);
        double tieSeconds = Timing.Seconds(a);

        a = Stopwatch.GetTimestamp();
        var masked = new long[s];
        Timing.ForEach(s, threads, i =>
        {
            if (weightsOf is not null)
            {
                var w = weightsOf(i);
                masked[i] = RadixSelect.ApplyThresholdToWeights(w.Bytes.AsSpan(w.Offset, w.Length), w.DType, shards[i].Mask, threshold, ties[i], 0, equal[i]);
            }
            else masked[i] = fill is null
                ? RadixSelect.ApplyThreshold(shards[i].Keys, shards[i].Mask, threshold, ties[i])
                : RadixSelect.ApplyThreshold(shards[i].Keys.Length, fill[i], shards[i].Mask, threshold, ties[i], 0, equal[i]);
        });
        double applySeconds = Timing.Seconds(a);

        return new ProtocolRun
        {
            Level0 = level0, Level1 = level1, Merge = merge, Count = countSeconds, Ties = tieSeconds, Apply = applySeconds,
            Total = Timing.Seconds(start), Levels = levels, ThresholdKey = threshold, Masked = masked.Sum(),
            HistogramBytes = histogramBytes, CountBytes = countBytes, TiesPerShard = ties,
        };
    }

    /// <summary>
    /// Coordinator memory while it merges one level: the shards' replies held at once
    /// (Task.WhenAll), MergeHistograms' sum and GlobalThresholdSearch's own merged buffer.
    /// </summary>
    public static long CoordinatorPeakBytes(int shards) => (shards + 2L) * RadixSelect.Buckets * sizeof(long);
}
