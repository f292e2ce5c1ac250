using System.Globalization;

namespace Shears.PipelineBench;

/// <summary>Options of both benchmarks.</summary>
public sealed record Options(string Work, string Data, string? Model, int Count, int Repeat, int Threads, int[] Silos, int Steps, int Batch);

public static class Program
{
    private const string Usage =
        "usage: pipeline-bench minilm|tinylm --work DIR [--data data/bible-ot-sample-2000.tsv] [--repeat 3] [--threads 2] [--silos 1,3]\n" +
        "         minilm: [--model DIR/model.onnx] [--count 512 sentences]\n" +
        "         tinylm: [--count 256 sequences] [--steps 4] [--batch 16]";

    public static async Task<int> Main(string[] args)
    {
        if (args.Length == 0 || args[0] is not ("minilm" or "tinylm")) { Console.Error.WriteLine(Usage); return 2; }
        var named = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 1; i < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length) { Console.Error.WriteLine($"pipeline-bench: '{args[i]}' needs a value\n{Usage}"); return 2; }
            named[args[i][2..]] = args[i + 1];
        }
        int Int(string name, int fallback) => named.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
        bool minilm = args[0] == "minilm";
        var o = new Options(
            Work: named.GetValueOrDefault("work") ?? Path.Combine(Path.GetTempPath(), "shears-pipeline-bench"),
            Data: named.GetValueOrDefault("data") ?? "data/bible-ot-sample-2000.tsv",
            Model: named.GetValueOrDefault("model"),
            Count: Int("count", minilm ? 512 : 256), Repeat: Int("repeat", 3), Threads: Int("threads", 2),
            Silos: (named.GetValueOrDefault("silos") ?? "1,3").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(),
            Steps: Int("steps", 4), Batch: Int("batch", 16));
        if (!File.Exists(o.Data)) { Console.Error.WriteLine($"pipeline-bench: the sentence file {o.Data} does not exist (run from the repository root)"); return 2; }

        Console.WriteLine($"--- pipeline-bench {string.Join(' ', args)}");
        Console.WriteLine($"date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; processors: {Environment.ProcessorCount}; load at start: {Measurements.Load()}");
        Console.WriteLine($"threads: in process {o.Threads} (ONNX Runtime intra-op or torch.set_num_threads); pipeline: 1 silo with ComputeThreads={o.Threads}, " +
                          "several silos with ComputeThreads=1 each; every compute thread at torch.set_num_threads(1). All silos share this process.");
        return minilm ? await MiniLmPipeline.RunAsync(o) : await TinyLmPipeline.RunAsync(o);
    }
}
