namespace Shears.Pruning.Selection;

/// <summary>
/// The coordinator's side of the exact selection: finds the key of the <c>count</c>-th smallest
/// unmasked key over every shard from merged histograms, 16 bits at a time.
/// </summary>
/// <remarks>
/// Protocol: while <see cref="IsComplete"/> is false, ask every shard for
/// <see cref="RadixSelect.Histogram"/> at (<see cref="Level"/>, <see cref="Prefix"/>), add each
/// reply with <see cref="AddHistogram"/> and close the level with <see cref="Submit()"/> (or pass
/// the merged histogram to <see cref="Submit(ReadOnlySpan{long}, bool)"/>). Then every piece reports
/// <see cref="RadixSelect.CountLessAndEqual"/> at <see cref="ThresholdKey"/>,
/// <see cref="RadixSelect.AssignTies"/> shares out <see cref="TiesNeeded"/>, and each piece runs
/// <see cref="RadixSelect.ApplyThreshold"/>. With count 0 the search is complete at once, with
/// threshold 0 and no ties: applying it masks nothing.
/// </remarks>
public sealed class GlobalThresholdSearch
{
    private readonly long[] _merged = new long[RadixSelect.Buckets];
    private bool _lowBitsZero = true;
    private long _belowPrefix; // unmasked keys whose top 16 bits are below Prefix
    private long _bucketSize;  // unmasked keys whose top 16 bits equal Prefix

    public GlobalThresholdSearch(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Count = count;
        IsComplete = count == 0;
    }

    /// <summary>How many more elements to mask over all shards.</summary>
    public long Count { get; }

    /// <summary>The digit level to ask shards for next: 0 (top 16 bits), then 1 (low 16 bits).</summary>
    public int Level { get; private set; }

    /// <summary>At level 1, the top 16 bits of the threshold (found at level 0).</summary>
    public uint Prefix { get; private set; }

    public bool IsComplete { get; private set; }

    /// <summary>Unmasked keys over all shards, known after level 0 (0 when Count is 0).</summary>
    public long TotalUnmasked { get; private set; }

    /// <summary>True when every shard reported keys with zero low bits (bf16): level 0 was exact.</summary>
    public bool ExactAfterLevel0 { get; private set; }

    /// <summary>The largest key to mask: the <see cref="Count"/>-th smallest unmasked key.</summary>
    public uint ThresholdKey { get; private set; }

    /// <summary>Unmasked keys below <see cref="ThresholdKey"/> over all shards; all are masked.</summary>
    public long CountBelow { get; private set; }

    /// <summary>Unmasked keys equal to <see cref="ThresholdKey"/> over all shards.</summary>
    public long CountEqual { get; private set; }

    /// <summary>How many of the keys equal to the threshold to mask, lowest global positions first.</summary>
    public long TiesNeeded => Count - CountBelow;

    /// <summary>
    /// Adds one shard's histogram for the current level. <paramref name="lowBitsZero"/> is what
    /// <see cref="RadixSelect.Histogram"/> returned; at level 0 it lets the search stop early.
    /// </summary>
    public void AddHistogram(ReadOnlySpan<long> histogram, bool lowBitsZero = false)
    {
        if (IsComplete) throw new InvalidOperationException("the threshold search is already complete");
        if (histogram.Length != RadixSelect.Buckets)
            throw new ArgumentException($"a histogram has {RadixSelect.Buckets} buckets, got {histogram.Length}", nameof(histogram));
        for (int b = 0; b < histogram.Length; b++)
        {
            if (histogram[b] < 0) throw new ArgumentException($"bucket {b} holds a negative count", nameof(histogram));
            _merged[b] += histogram[b];
        }
        _lowBitsZero &= lowBitsZero;
    }

    /// <summary>Closes the current level with the histograms added so far.</summary>
    public void Submit()
    {
        if (IsComplete) throw new InvalidOperationException("the threshold search is already complete");
        if (Level == 0) CloseLevel0();
        else CloseLevel1();
        Array.Clear(_merged);
        _lowBitsZero = true;
    }

    /// <summary>Closes the current level with the histogram already merged over every shard.</summary>
    public void Submit(ReadOnlySpan<long> mergedHistogram, bool lowBitsZero = false)
    {
        AddHistogram(mergedHistogram, lowBitsZero);
        Submit();
    }

    private void CloseLevel0()
    {
        long total = 0;
        foreach (long c in _merged) total += c;
        if (Count > total)
            throw new InvalidOperationException($"asked to mask {Count} more elements but only {total} are unmasked");
        TotalUnmasked = total;

        (int bucket, long below) = Find(Count);
        if (_lowBitsZero)
        {
            // Every key is a widened bf16 value: the bucket is the key.
            ExactAfterLevel0 = true;
            Finish((uint)bucket << 16, below, _merged[bucket]);
            return;
        }
        Prefix = (uint)bucket;
        _belowPrefix = below;
        _bucketSize = _merged[bucket];
        Level = 1;
    }

    private void CloseLevel1()
    {
        long total = 0;
        foreach (long c in _merged) total += c;
        if (total != _bucketSize)
            throw new InvalidOperationException(
                $"level 1 counted {total} keys under prefix {Prefix:X4} where level 0 counted {_bucketSize}: the shards changed between levels");
        (int digit, long below) = Find(Count - _belowPrefix);
        Finish((Prefix << 16) | (uint)digit, _belowPrefix + below, _merged[digit]);
    }

    // The bucket holding the rank-th smallest (1-based) of _merged, and how many lie below it.
    private (int Bucket, long Below) Find(long rank)
    {
        long below = 0;
        for (int b = 0; b < _merged.Length; b++)
        {
            if (below + _merged[b] >= rank) return (b, below);
            below += _merged[b];
        }
        throw new InvalidOperationException("unreachable: rank exceeds the histogram's total");
    }

    private void Finish(uint threshold, long below, long equal)
    {
        ThresholdKey = threshold;
        CountBelow = below;
        CountEqual = equal;
        IsComplete = true;
    }
}
