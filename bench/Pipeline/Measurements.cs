using System.Globalization;

namespace Shears.PipelineBench;

/// <summary>One timed pass: what was done (units of <see cref="Unit"/>) in how many seconds.</summary>
public sealed record Pass(string Metric, double Seconds, double Units, string Unit)
{
    public double Rate => Units / Seconds;
}

/// <summary>A way of doing the same work, measured once per repeat.</summary>
public sealed record Case(string Name, Func<Task<IReadOnlyList<Pass>>> Run);

/// <summary>Runs every case once per repeat, alternating their order, prints each pass as it ends, then the medians and ratios.</summary>
public static class Measurements
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static async Task<List<(int Repeat, string Case, Pass Pass)>> RunAsync(IReadOnlyList<Case> cases, int repeats)
    {
        var all = new List<(int, string, Pass)>();
        for (int r = 1; r <= repeats; r++)
        {
            // Forward on odd repeats, backward on even ones: drift in the machine's load falls on every case alike.
            var order = r % 2 == 1 ? cases : cases.Reverse().ToList();
            foreach (var c in order)
            {
                foreach (var pass in await c.Run())
                {
                    all.Add((r, c.Name, pass));
                    Console.WriteLine(string.Create(Inv,
                        $"raw repeat={r} case={c.Name} metric={pass.Metric} seconds={pass.Seconds:F3} {pass.Unit}={pass.Units:F0} rate={pass.Rate:F1} load={Load()}"));
                }
            }
        }
        return all;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Median rate per case and metric; each ratio pairs a pipeline case with its in-process reference.</summary>
    public static void Summarize(List<(int Repeat, string Case, Pass Pass)> all, IReadOnlyList<(string Pipeline, string InProcess)> pairs)
    {
        Console.WriteLine();
        Console.WriteLine("median over repeats (rate per second; min–max in brackets):");
        foreach (var group in all.GroupBy(a => (a.Case, a.Pass.Metric)))
        {
            var rates = group.Select(g => g.Pass.Rate).ToArray();
            var seconds = group.Select(g => g.Pass.Seconds).ToArray();
            Console.WriteLine(string.Create(Inv,
                $"  {group.Key.Case,-26} {group.Key.Metric,-9} {Median(rates),10:F1} {group.First().Pass.Unit}/s [{rates.Min():F1}–{rates.Max():F1}]  median {Median(seconds):F3} s"));
        }
        Console.WriteLine("ratios pipeline / in-process (median of the per-repeat ratios; >1 = the pipeline is faster):");
        foreach (var (pipeline, inProcess) in pairs)
            foreach (var metric in all.Where(a => a.Case == pipeline).Select(a => a.Pass.Metric).Distinct())
            {
                var ratios = all.Where(a => a.Case == pipeline && a.Pass.Metric == metric)
                    .Join(all.Where(a => a.Case == inProcess && a.Pass.Metric == metric), a => a.Repeat, b => b.Repeat, (a, b) => a.Pass.Rate / b.Pass.Rate)
                    .ToArray();
                if (ratios.Length == 0) continue;
                Console.WriteLine(string.Create(Inv,
                    $"  {pipeline,-26} / {inProcess,-26} {metric,-9} {Median(ratios):F3}  [{ratios.Min():F3}–{ratios.Max():F3}]"));
            }
    }

    public static string Load() => File.Exists("/proc/loadavg") ? string.Join('/', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    /// <summary>Runs <paramref name="work"/> on a fresh thread whose libtorch intra-op threads are <paramref name="torchThreads"/>.</summary>
    public static Task<T> OnThread<T>(int torchThreads, Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                TorchSharp.torch.set_num_threads(torchThreads);
                done.SetResult(work());
            }
            catch (Exception e) { done.SetException(e); }
        }) { IsBackground = true, Name = "in-process" };
        thread.Start();
        return done.Task;
    }
}
