using System.Text.RegularExpressions;

namespace Shears.Bench;

/// <summary>The printed figures; RESULTS.md is written from these lines.</summary>
internal static partial class Report
{
    private const double HistogramFloorGBs = 9.0; // a single-core C 16-bit histogram pass over fp32 measured on these machines (bench/RESULTS.md)

    public static void Header(string benchmark, BenchOptions o)
    {
        Console.WriteLine($"# Shears.Bench {benchmark}");
        Console.WriteLine($"command: dotnet run -c Release --project bench/Shears.Bench -- {string.Join(' ', Environment.GetCommandLineArgs().Skip(1))}");
        Console.WriteLine($"date: {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC");
        Console.WriteLine($"machine: {Environment.ProcessorCount} cores, {CpuModel()}, {MemoryTotal()} memory; .NET {Environment.Version}; TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}");
        Console.WriteLine($"load average at start: {LoadAverage()} (other processes share these cores)");
    }

    public static void Shears(int shards, int threads, long n, double keySeconds, ProtocolRun run, long coordinatorPeak)
    {
        double keyBytes = n * 4.0;
        double histogramSeconds = run.Level0 + run.Level1;
        Console.WriteLine($"shears  threads={threads}{(threads > 1 && shards == 1 ? " (one shard: one thread works)" : "")}");
        Console.WriteLine($"  ScoreKeys.Magnitude      {keySeconds,8:0.000} s");
        Console.WriteLine($"  selection total          {run.Total,8:0.000} s  ({run.Levels} histogram level{(run.Levels == 1 ? "" : "s")})");
        Console.WriteLine($"    level-0 histograms     {run.Level0,8:0.000} s  {Rate(keyBytes, run.Level0)}");
        if (run.Levels > 1)
            Console.WriteLine($"    level-1 histograms     {run.Level1,8:0.000} s  {Rate(keyBytes, run.Level1)}");
        Console.WriteLine($"    merge + search         {run.Merge,8:0.000} s");
        Console.WriteLine($"    CountLessAndEqual      {run.Count,8:0.000} s  {Rate(keyBytes, run.Count)}");
        Console.WriteLine($"    AssignTies             {run.Ties,8:0.000} s");
        Console.WriteLine($"    ApplyThreshold         {run.Apply,8:0.000} s  {Rate(keyBytes, run.Apply)}");
        Console.WriteLine($"  histogram pass: {keyBytes * run.Levels / histogramSeconds / 1e9:0.00} GB/s of keys ({keyBytes * run.Levels / threads / histogramSeconds / 1e9:0.00} GB/s per thread) vs the ~{HistogramFloorGBs} GB/s single-core floor");
        Console.WriteLine($"  exchanged: histograms {Timing.Bytes(run.HistogramBytes)} ({run.Levels} × {shards} × 65536 × 8 B) + counts {run.CountBytes} B ({shards} × 2 × 8 B) = {Timing.Bytes(run.HistogramBytes + run.CountBytes)}");
        Console.WriteLine($"  coordinator peak for selection: {Timing.Bytes(coordinatorPeak)} = ({shards} replies + merged sum + search buffer) × 512 KiB; replies alone {Timing.Bytes(shards * 65536L * 8)}");
    }

    public static void WordwiseApply(ProtocolRun run, double wordwiseSeconds, long n) =>
        Console.WriteLine($"  what-if: ApplyThreshold OR-ing whole mask words (same mask, checked) {wordwiseSeconds:0.000} s {Rate(n * 4.0, wordwiseSeconds)} → selection {run.Total - run.Apply + wordwiseSeconds:0.000} s");

    public static void Torch(int threads, long n, int elementSize, long k, TorchRun run)
    {
        long scores = n * elementSize;
        long topkOut = k * (elementSize + 8L);
        Console.WriteLine($"torch  set_num_threads({threads})");
        Console.WriteLine($"  cat + abs                {run.CatAbs,8:0.000} s");
        Console.WriteLine($"  cat + abs + kthvalue     {run.Kth,8:0.000} s  (kthvalue alone {run.Kth - run.CatAbs:0.000} s)");
        Console.WriteLine($"  cat + abs + topk         {run.Topk,8:0.000} s");
        Console.WriteLine($"  memory: concatenated scores {Timing.Bytes(scores)} + |w| copy {Timing.Bytes(scores)} + topk outputs {Timing.Bytes(topkOut)} (values {elementSize} B + int64 index per k) = {Timing.Bytes(2 * scores + topkOut)}, on one device");
    }

    public static void Ratios(Dictionary<int, (double Keys, ProtocolRun Run)> shears, Dictionary<int, TorchRun> torch)
    {
        Console.WriteLine("ratio torch / shears (>1: Shears faster)");
        Console.WriteLine("  torch thr  shears thr   kthvalue/select   kthvalue/(keys+select)   topk/(keys+select)");
        foreach (var (tt, t) in torch.OrderBy(x => x.Key))
        {
            foreach (var (st, s) in shears.OrderBy(x => x.Key))
            {
                double withKeys = s.Keys + s.Run.Total;
                Console.WriteLine($"  {tt,9}  {st,10}   {(t.Kth - t.CatAbs) / s.Run.Total,15:0.0}×   {t.Kth / withKeys,21:0.0}×   {t.Topk / withKeys,17:0.0}×");
            }
        }
    }

    public static string Rate(double bytes, double seconds) => seconds > 0 ? $"{bytes / seconds / 1e9,6:0.00} GB/s" : "";

    private static string CpuModel()
    {
        try
        {
            var match = ModelName().Match(File.ReadAllText("/proc/cpuinfo"));
            return match.Success ? match.Groups[1].Value.Trim() : "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }

    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static string MemoryTotal()
    {
        try
        {
            var match = MemTotal().Match(File.ReadAllText("/proc/meminfo"));
            return match.Success ? Timing.Bytes(long.Parse(match.Groups[1].Value) * 1024) : "unknown";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    [GeneratedRegex(@"model name\s*:\s*(.*)")]
    private static partial Regex ModelName();

    [GeneratedRegex(@"MemTotal:\s*(\d+) kB")]
    private static partial Regex MemTotal();
}
