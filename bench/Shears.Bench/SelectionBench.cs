using System.Diagnostics;
using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Bench;

/// <summary>
/// Global magnitude selection over S shards: Shears' distributed radix select run in-process
/// against global_unstructured's gather (torch.cat + abs, then kthvalue or topk).
/// </summary>
internal static class SelectionBench
{
    private const float Sigma = 0.02f;

    public static void Run(BenchOptions o)
    {
        if (o.Elements > Array.MaxLength) throw new BenchUsageException($"--elements is at most {Array.MaxLength}");
        int n = (int)o.Elements;
        long k = Counts.Target(o.Sparsity, n);
        if (k == 0) throw new BenchUsageException("the sparsity masks no element: nothing to select");
        bool bf16 = o.DType == TensorDType.BF16;
        int elementSize = bf16 ? 2 : 4;

        Report.Header("selection", o);
        Console.WriteLine($"N = {n:N0} {(bf16 ? "bf16" : "fp32")} weights ~ normal(0, {Sigma}), seed {o.Seed}; sparsity {o.Sparsity} → k = {k:N0}; repeat {o.Repeat} (median)");

        long t = Stopwatch.GetTimestamp();
        float[] weights = Weights.Normal(n, Sigma, o.Seed);
        ushort[]? bits = bf16 ? Weights.ToBFloat16(weights) : null;
        Console.WriteLine($"weights generated in {Timing.Seconds(t):0.00} s");
        Warmup.Selection();

        foreach (int s in o.Shards)
        {
            if (s > n) throw new BenchUsageException($"--shards {s} is more than the {n} elements");
            Console.WriteLine();
            Console.WriteLine($"== {s} shard(s) ==");
            var shards = new BenchShard[s];
            for (int i = 0; i < s; i++)
            {
                long start = (long)n * i / s, end = (long)n * (i + 1) / s;
                shards[i] = new BenchShard(start, new uint[end - start]);
            }

            // Touch the fresh key arrays once, untimed: the first write pays the page faults.
            Timing.ForEach(s, o.Threads.Max(), i => ComputeKeys(shards[i], weights, bits));

            var shears = new Dictionary<int, (double Keys, ProtocolRun Run)>();
            var fromWeightsTotals = new Dictionary<int, double>();
            foreach (int threads in o.Threads)
            {
                var keySeconds = new List<double>();
                var runs = new List<ProtocolRun>();
                var wordwise = new List<double>();
                var bf16Level0 = new List<double>();
                for (int r = 0; r < o.Repeat; r++)
                {
                    foreach (var shard in shards) shard.Mask = new(shard.Keys.Length);
                    Timing.Quiesce();
                    long kt = Stopwatch.GetTimestamp();
                    Timing.ForEach(s, threads, i => ComputeKeys(shards[i], weights, bits));
                    keySeconds.Add(Timing.Seconds(kt));
                    Timing.Quiesce();
                    var run = GlobalProtocol.Run(shards, k, threads);
                    long set = shards.Sum(x => x.Mask.CountSet());
                    if (run.Masked != k || set != k)
                        throw new InvalidOperationException($"Shears masked {run.Masked} (mask bits {set}) where {k} were asked");
                    runs.Add(run);
                    wordwise.Add(TimeWordwiseApply(shards, run, threads));
                    if (bf16)
                    {
                        foreach (var shard in shards) shard.Mask = new(shard.Keys.Length);
                        Timing.Quiesce();
                        var exact = GlobalProtocol.Run(shards, k, threads, forwardLowBitsZero: true);
                        if (exact.Levels != 1 || exact.ThresholdKey != run.ThresholdKey || exact.Masked != k)
                            throw new InvalidOperationException($"bf16 with lowBitsZero forwarded: {exact.Levels} levels, threshold {exact.ThresholdKey:X8}, masked {exact.Masked}");
                        bf16Level0.Add(exact.Total);
                    }
                }
                // As shard grains run it: no key array; histograms, counts and masks read the weight bits.
                var fillers = shards.Select(shard => Filler(shard, weights, bits)).ToArray();
                byte[]? weightBytes = bits is null ? MemoryMarshal.AsBytes(weights.AsSpan()).ToArray() : null;
                byte[]? bitBytes = bits is null ? null : MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
                var fromWeights = new List<ProtocolRun>();
                // One untimed run first (r = -1), as the held-key path gets from Warmup: the chunked code is jitted and tiered.
                for (int r = -1; r < o.Repeat; r++)
                {
                    foreach (var shard in shards) shard.Mask = new(shard.Keys.Length);
                    Timing.Quiesce();
                    var run = GlobalProtocol.Run(shards, k, threads, fill: fillers, histogramOf: (i, level, prefix, into) =>
                    {
                        var shard = shards[i];
                        var bytes = bits is null
                            ? MemoryMarshal.AsBytes(weights.AsSpan((int)shard.Start, shard.Keys.Length))
                            : MemoryMarshal.AsBytes(bits.AsSpan((int)shard.Start, shard.Keys.Length));
                        return RadixSelect.HistogramOfWeights(bytes, bits is null ? TensorDType.F32 : TensorDType.BF16, shard.Mask, 0, level, prefix, into);
                    }, weightsOf: i => bits is null
                        ? (weightBytes!, (int)shards[i].Start * 4, shards[i].Keys.Length * 4, TensorDType.F32)
                        : (bitBytes!, (int)shards[i].Start * 2, shards[i].Keys.Length * 2, TensorDType.BF16));
                    if (run.Masked != k || run.ThresholdKey != runs[0].ThresholdKey)
                        throw new InvalidOperationException($"from weights: masked {run.Masked}, threshold {run.ThresholdKey:X8}");
                    if (r >= 0) fromWeights.Add(run);
                }
                var fromWeightsMedian = MedianRun(fromWeights);
                Console.WriteLine($"  from weights (no key array, as shard grains do: histograms, counts and masks read the weight bits): " +
                                  $"selection {fromWeightsMedian.Total:0.000} s (histograms {fromWeightsMedian.Level0 + fromWeightsMedian.Level1:0.000}, count {fromWeightsMedian.Count:0.000}, apply {fromWeightsMedian.Apply:0.000}); " +
                                  $"without the count pass, which shards answer from their kept histograms: {fromWeightsMedian.Total - fromWeightsMedian.Count:0.000} s");
                var median = MedianRun(runs);
                shears[threads] = (Timing.Median(keySeconds), median);
                fromWeightsTotals[threads] = fromWeightsMedian.Total - fromWeightsMedian.Count;
                Report.Shears(s, threads, n, Timing.Median(keySeconds), median, GlobalProtocol.CoordinatorPeakBytes(s));
                Report.WordwiseApply(median, Timing.Median(wordwise), n);
                if (bf16)
                    Console.WriteLine($"  what-if: lowBitsZero forwarded to GlobalThresholdSearch (bf16 exact after level 0, same mask) → selection {Timing.Median(bf16Level0):0.000} s, histograms {Timing.Bytes((long)s * 65536 * 8)}");
            }
            uint thresholdKey = shears.Values.First().Run.ThresholdKey;
            if (shears.Values.Any(x => x.Run.ThresholdKey != thresholdKey))
                throw new InvalidOperationException("thread counts disagree on the threshold");

            var torchRuns = new Dictionary<int, TorchRun>();
            foreach (int threads in o.TorchThreads)
            {
                var run = TorchGlobal(weights, shards, bf16, k, threads, o.Repeat);
                float expected = ScoreKeys.ToScore(thresholdKey);
                if (run.KthValue != expected || run.TopkMax != expected || run.TopkCount != k)
                    throw new InvalidOperationException(
                        $"not exact: kthvalue {run.KthValue:R}, topk max {run.TopkMax:R} ({run.TopkCount} values), Shears threshold {expected:R} ({thresholdKey:X8})");
                torchRuns[threads] = run;
                Report.Torch(threads, n, elementSize, k, run);
            }
            Console.WriteLine($"exact: kthvalue = topk max = ToScore(0x{thresholdKey:X8}) = {ScoreKeys.ToScore(thresholdKey):R}; masked = Counts.Target({o.Sparsity}, N) = {k:N0}");
            Report.Ratios(shears, torchRuns);
            foreach (var (tt, torchRun) in torchRuns.OrderBy(x => x.Key))
                foreach (var (st, total) in fromWeightsTotals.OrderBy(x => x.Key))
                    Console.WriteLine($"  from weights: torch {tt} thr cat+abs+kthvalue / shears {st} thr selection from weights (no count pass) = {torchRun.Kth / total:0.0}×");

            foreach (var shard in shards) shard.Mask = new(0);
            Timing.Quiesce();
        }
    }

    /// <summary>
    /// Times the word-wise what-if of ApplyThreshold on the same decision, from the same empty
    /// masks, and checks that it gives the very mask the grains code gave.
    /// </summary>
    private static double TimeWordwiseApply(BenchShard[] shards, ProtocolRun run, int threads)
    {
        var words = shards.Select(x => new ulong[x.Mask.Words.Length]).ToArray();
        foreach (var w in words) Array.Fill(w, 0UL); // fault the pages in, untimed
        long t = Stopwatch.GetTimestamp();
        var masked = new long[shards.Length];
        Timing.ForEach(shards.Length, threads, i => masked[i] = WordwiseApply.Apply(shards[i].Keys, words[i], run.ThresholdKey, run.TiesPerShard[i]));
        double seconds = Timing.Seconds(t);
        for (int i = 0; i < shards.Length; i++)
        {
            if (!shards[i].Mask.Words.SequenceEqual(words[i]))
                throw new InvalidOperationException($"the word-wise apply differs from ApplyThreshold on shard {i}");
        }
        if (masked.Sum() != run.Masked) throw new InvalidOperationException("the word-wise apply masked a different count");
        return seconds;
    }

    private static KeyFiller Filler(BenchShard shard, float[] weights, ushort[]? bits) => (start, keys) =>
    {
        int at = (int)(shard.Start + start);
        if (bits is null)
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(weights.AsSpan(at, keys.Length)), TensorDType.F32, keys, "bench.weight", at);
        else
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(bits.AsSpan(at, keys.Length)), TensorDType.BF16, keys, "bench.weight", at);
    };

    private static void ComputeKeys(BenchShard shard, float[] weights, ushort[]? bits)
    {
        int start = (int)shard.Start, length = shard.Keys.Length;
        if (bits is null)
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(weights.AsSpan(start, length)), TensorDType.F32, shard.Keys, "bench.weight", start);
        else
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(bits.AsSpan(start, length)), TensorDType.BF16, shard.Keys, "bench.weight", start);
    }

    private static ProtocolRun MedianRun(List<ProtocolRun> runs) => runs[0] with
    {
        Level0 = Timing.Median(runs.Select(r => r.Level0).ToArray()),
        Level1 = Timing.Median(runs.Select(r => r.Level1).ToArray()),
        Merge = Timing.Median(runs.Select(r => r.Merge).ToArray()),
        Count = Timing.Median(runs.Select(r => r.Count).ToArray()),
        Ties = Timing.Median(runs.Select(r => r.Ties).ToArray()),
        Apply = Timing.Median(runs.Select(r => r.Apply).ToArray()),
        Total = Timing.Median(runs.Select(r => r.Total).ToArray()),
    };

    /// <summary>
    /// global_unstructured's path on the same shards: the shard tensors already in memory,
    /// then cat, abs and kthvalue (or topk(k, largest: false)) timed.
    /// </summary>
    private static TorchRun TorchGlobal(float[] weights, BenchShard[] shards, bool bf16, long k, int threads, int repeat)
    {
        torch.set_num_threads(threads);
        var pieces = new Tensor[shards.Length];
        using (var scope = torch.NewDisposeScope())
        {
            for (int i = 0; i < shards.Length; i++)
            {
                var piece = torch.tensor(weights.AsSpan((int)shards[i].Start, shards[i].Keys.Length).ToArray());
                pieces[i] = (bf16 ? piece.to(ScalarType.BFloat16) : piece).DetachFromDisposeScope();
            }
        }
        Timing.Quiesce();
        try
        {
            var catAbs = new List<double>();
            var kth = new List<double>();
            var topk = new List<double>();
            float kthValue = float.NaN, topkMax = float.NaN;
            long topkCount = 0;
            for (int r = 0; r < repeat; r++)
            {
                using (var scope = torch.NewDisposeScope())
                {
                    long t = Stopwatch.GetTimestamp();
                    var scores = torch.cat(pieces, 0).abs();
                    double gathered = Timing.Seconds(t);
                    var (values, _) = torch.kthvalue(scores, k, 0);
                    float value = values.to(ScalarType.Float32).item<float>();
                    kth.Add(Timing.Seconds(t));
                    catAbs.Add(gathered);
                    kthValue = value;
                }
                using (var scope = torch.NewDisposeScope())
                {
                    long t = Stopwatch.GetTimestamp();
                    var scores = torch.cat(pieces, 0).abs();
                    var (values, indices) = torch.topk(scores, checked((int)k), largest: false);
                    topk.Add(Timing.Seconds(t));
                    topkMax = values.max().to(ScalarType.Float32).item<float>();
                    topkCount = indices.numel();
                }
            }
            return new TorchRun(Timing.Median(catAbs), Timing.Median(kth), Timing.Median(topk), kthValue, topkMax, topkCount);
        }
        finally
        {
            foreach (var piece in pieces) piece.Dispose();
            Timing.Quiesce();
        }
    }
}

/// <summary>TorchSharp's medians: cat+abs alone, cat+abs+kthvalue, cat+abs+topk; and their answers.</summary>
internal sealed record TorchRun(double CatAbs, double Kth, double Topk, float KthValue, float TopkMax, long TopkCount);
