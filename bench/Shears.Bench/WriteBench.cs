using System.Diagnostics;

namespace Shears.Bench;

/// <summary>
/// The machine's own buffered-write speed, with no Shears code: a fresh file of SIZE bytes written by 4 MiB pwrites
/// from one thread, timed into the page cache and then through sync, repeated. The end-to-end benchmark's `cp` and the
/// export both ride on this; its spread is the floor under theirs.
/// </summary>
internal static class WriteBench
{
    public static int Run(ReadOnlySpan<string> span)
    {
        string[] args = span.ToArray();
        if (args.Length < 2 || !long.TryParse(args[1], out long mib) || mib <= 0)
        {
            Console.Error.WriteLine("usage: write FILE SIZE_MIB [--repeat 5]");
            return 2;
        }
        string file = args[0];
        int repeat = 5;
        for (int i = 2; i + 1 < args.Length; i++) if (args[i] == "--repeat") repeat = int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture);
        long size = mib << 20;
        var buffer = new byte[4 << 20];
        new Random(1).NextBytes(buffer);
        Console.WriteLine($"write: {mib} MiB by 4 MiB pwrites from one thread into a fresh {file}, then sync; {repeat} runs; {DateTime.UtcNow:u}");
        var cached = new List<double>();
        var synced = new List<double>();
        for (int r = 0; r < repeat; r++)
        {
            File.Delete(file);
            Sync();
            var clock = Stopwatch.StartNew();
            using (var handle = File.OpenHandle(file, FileMode.CreateNew, FileAccess.Write))
            {
                for (long at = 0; at < size; at += buffer.Length)
                    RandomAccess.Write(handle, buffer.AsSpan(0, (int)Math.Min(buffer.Length, size - at)), at);
            }
            double written = clock.Elapsed.TotalSeconds;
            Sync();
            double total = clock.Elapsed.TotalSeconds;
            cached.Add(written);
            synced.Add(total);
            Console.WriteLine($"  run {r + 1}: {written:F2} s ({size / written / 1e9:F2} GB/s), with sync {total:F2} s");
        }
        File.Delete(file);
        Console.WriteLine($"  page cache: {cached.Min():F2}–{cached.Max():F2} s, median {Timing.Median(cached):F2} s; with sync: {synced.Min():F2}–{synced.Max():F2} s, median {Timing.Median(synced):F2} s");
        return 0;
    }

    private static void Sync()
    {
        using var sync = Process.Start(new ProcessStartInfo("sync") { UseShellExecute = false })!;
        sync.WaitForExit();
    }
}
