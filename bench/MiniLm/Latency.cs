using System.Diagnostics;
using System.Globalization;
using Shears.Pruning.Encoders;

namespace Shears.MiniLmBench;

/// <summary>
/// ONNX Runtime latency of several models on the same sentences, in one process, with the same intra-op thread count:
/// one warm-up pass of each, then <c>--repeat</c> rounds, each timing one pass per model in forward order on odd
/// rounds and backward order on even ones (so a slow window of the machine falls on every model alike). A pass embeds
/// every sentence in batches of <c>--batch</c>. Prints per model the median and range of milliseconds per batch and the
/// speed-up against the first model (median of the per-round ratios).
///
///   minilm-bench latency --models LABEL=PATH[,LABEL=PATH…] --sentences FILE [--vocab V] [--threads T] [--batch B] [--repeat R] [--count N]
/// </summary>
internal static class Latency
{
    public static int Run(Program.Options o)
    {
        var models = o.Require("--models").Split(',').Select(m => m.Split('=', 2)).Select(p => (Label: p[0], Path: p[1])).ToArray();
        int threads = int.Parse(o.Get("--threads") ?? "2", CultureInfo.InvariantCulture);
        int batch = int.Parse(o.Get("--batch") ?? "32", CultureInfo.InvariantCulture);
        int repeat = int.Parse(o.Get("--repeat") ?? "7", CultureInfo.InvariantCulture);
        int count = int.Parse(o.Get("--count") ?? "256", CultureInfo.InvariantCulture);
        // The last column of each line: a .tsv of pairs gives its WEB verses, a .txt its lines.
        var sentences = File.ReadLines(o.Require("--sentences")).Select(l => l.Split('\t')[^1]).Where(s => s.Length > 0).Take(count).ToArray();
        string vocab = o.Get("--vocab") ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(models[0].Path))!, "vocab.txt");
        var tokenizer = BertTextTokenizer.Create(vocab, 128);
        var sessions = models.Select(m => new OnnxBertSession(m.Path, threads)).ToArray();
        try
        {
            int batches = (sentences.Length + batch - 1) / batch;
            foreach (var s in sessions) s.Embed(sentences, tokenizer, batch);
            var times = models.Select(_ => new List<double>()).ToArray();
            for (int r = 1; r <= repeat; r++)
            {
                var order = Enumerable.Range(0, models.Length);
                foreach (int i in r % 2 == 1 ? order : order.Reverse())
                {
                    var clock = Stopwatch.StartNew();
                    sessions[i].Embed(sentences, tokenizer, batch);
                    times[i].Add(clock.Elapsed.TotalMilliseconds / batches);
                }
            }
            Console.WriteLine(FormattableString.Invariant($"sentences {sentences.Length}, batches of {batch}, {threads} intra-op threads, {repeat} alternating rounds, load {File.ReadAllText("/proc/loadavg").Trim()}"));
            Console.WriteLine("model\tms/batch median\tmin\tmax\tspeed-up vs first (median of per-round ratios)\traw ms/batch");
            for (int i = 0; i < models.Length; i++)
            {
                var sorted = times[i].Order().ToArray();
                var ratios = times[0].Zip(times[i], (a, b) => a / b).Order().ToArray();
                Console.WriteLine(FormattableString.Invariant(
                    $"{models[i].Label}\t{sorted[sorted.Length / 2]:F1}\t{sorted[0]:F1}\t{sorted[^1]:F1}\t{ratios[ratios.Length / 2]:F3}\t{string.Join(' ', times[i].Select(t => t.ToString("F1", CultureInfo.InvariantCulture)))}"));
            }
            return 0;
        }
        finally
        {
            foreach (var s in sessions) s.Dispose();
        }
    }
}
