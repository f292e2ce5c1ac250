using System.Diagnostics;
using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Bench;

/// <summary>
/// Layer-wise magnitude mask of one fp32 matrix: LocalSelection.MaskSmallest against
/// l1_unstructured's abs + topk (and kthvalue, the cheaper exact alternative).
/// </summary>
internal static class LayerBench
{
    public static void Run(BenchOptions o)
    {
        long elements = (long)o.Rows * o.Cols;
        if (elements > Array.MaxLength) throw new BenchUsageException($"--rows × --cols is at most {Array.MaxLength}");
        int n = (int)elements;
        long k = Counts.Target(o.Sparsity, n);
        if (k == 0) throw new BenchUsageException("the sparsity masks no element: nothing to select");

        Report.Header("layer", o);
        Console.WriteLine($"one {o.Rows}×{o.Cols} fp32 tensor ~ normal(0, 0.02), seed {o.Seed}; sparsity {o.Sparsity} → k = {k:N0}; repeat {o.Repeat} (median)");
        float[] weights = Weights.Normal(n, 0.02f, o.Seed);
        var keys = new uint[n];
        Warmup.Selection();

        var keySeconds = new List<double>();
        var selectSeconds = new List<double>();
        uint threshold = 0;
        for (int r = 0; r < o.Repeat; r++)
        {
            var mask = new BitMask(n);
            Timing.Quiesce();
            long t = Stopwatch.GetTimestamp();
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(weights.AsSpan()), TensorDType.F32, keys, "layer.weight");
            keySeconds.Add(Timing.Seconds(t));
            t = Stopwatch.GetTimestamp();
            var result = LocalSelection.MaskSmallest(keys, mask, k);
            selectSeconds.Add(Timing.Seconds(t));
            if (result.Masked != k || mask.CountSet() != k)
                throw new InvalidOperationException($"MaskSmallest masked {result.Masked} (mask bits {mask.CountSet()}) where {k} were asked");
            threshold = result.ThresholdKey;
        }
        double keysMedian = Timing.Median(keySeconds), selectMedian = Timing.Median(selectSeconds);
        Console.WriteLine("shears  one thread");
        Console.WriteLine($"  ScoreKeys.Magnitude      {keysMedian,8:0.000} s");
        Console.WriteLine($"  MaskSmallest             {selectMedian,8:0.000} s  (3 passes over {Timing.Bytes(n * 4L)} of keys: {n * 4.0 * 3 / selectMedian / 1e9:0.00} GB/s)");

        using var tensor = torch.tensor(weights, [o.Rows, o.Cols]);
        foreach (int threads in o.TorchThreads)
        {
            torch.set_num_threads(threads);
            var kth = new List<double>();
            var topk = new List<double>();
            float kthValue = float.NaN, topkMax = float.NaN;
            for (int r = 0; r < o.Repeat; r++)
            {
                Timing.Quiesce();
                using (var scope = torch.NewDisposeScope())
                {
                    long t = Stopwatch.GetTimestamp();
                    var (values, _) = torch.kthvalue(tensor.abs().view(-1), k, 0);
                    kthValue = values.item<float>();
                    kth.Add(Timing.Seconds(t));
                }
                using (var scope = torch.NewDisposeScope())
                {
                    long t = Stopwatch.GetTimestamp();
                    var (values, _) = torch.topk(tensor.abs().view(-1), checked((int)k), largest: false);
                    topk.Add(Timing.Seconds(t));
                    topkMax = values.max().item<float>();
                }
            }
            float expected = ScoreKeys.ToScore(threshold);
            if (kthValue != expected || topkMax != expected)
                throw new InvalidOperationException($"not exact: kthvalue {kthValue:R}, topk max {topkMax:R}, Shears threshold {expected:R}");
            double kthMedian = Timing.Median(kth), topkMedian = Timing.Median(topk);
            Console.WriteLine($"torch  set_num_threads({threads})");
            Console.WriteLine($"  abs + kthvalue           {kthMedian,8:0.000} s");
            Console.WriteLine($"  abs + topk               {topkMedian,8:0.000} s");
            Console.WriteLine($"ratio torch({threads} thr) / shears(1 thr, keys + MaskSmallest): kthvalue {kthMedian / (keysMedian + selectMedian):0.0}×, topk {topkMedian / (keysMedian + selectMedian):0.0}×; MaskSmallest alone vs kthvalue {kthMedian / selectMedian:0.0}×");
        }
        Console.WriteLine($"exact: kthvalue = topk max = ToScore(0x{threshold:X8}) = {ScoreKeys.ToScore(threshold):R}; masked = {k:N0}");
    }
}
