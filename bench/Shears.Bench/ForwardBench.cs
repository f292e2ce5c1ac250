using System.Diagnostics;
using System.Globalization;
using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Bench;

/// <summary>
/// LLaMA-family checkpoints compared in one process: each one's perplexity on the same token sequences and the
/// tokens per second of a TorchSharp forward pass over them (fp32, CPU, the same intra-op threads), one warm-up pass
/// each, then <c>--repeat</c> rounds alternating the order (forward on odd rounds, backward on even). The speed-up is
/// the median of the per-round ratios first ÷ model. Also: the model's parameters and its files' bytes.
///
///   forward --models LABEL=DIR[,LABEL=DIR…] --eval FILE [--seq-len 128] [--batch 8] [--threads 2] [--repeat 9]
/// </summary>
internal static class ForwardBench
{
    public static int Run(ReadOnlySpan<string> span)
    {
        string[] args = span.ToArray();
        string? Get(string name) { for (int i = 0; i + 1 < args.Length; i++) if (args[i] == name) return args[i + 1]; return null; }
        if (Get("--models") is not { } list || Get("--eval") is not { } eval)
        {
            Console.Error.WriteLine("usage: forward --models LABEL=DIR[,LABEL=DIR…] --eval FILE [--seq-len 128] [--batch 8] [--threads 2] [--repeat 9]");
            return 2;
        }
        int seqLen = int.Parse(Get("--seq-len") ?? "128", CultureInfo.InvariantCulture), batch = int.Parse(Get("--batch") ?? "8", CultureInfo.InvariantCulture);
        int threads = int.Parse(Get("--threads") ?? "2", CultureInfo.InvariantCulture), repeat = int.Parse(Get("--repeat") ?? "9", CultureInfo.InvariantCulture);
        torch.set_num_threads(threads);
        var models = list.Split(',').Select(m => m.Split('=', 2)).Select(p => (Label: p[0], Dir: p[1])).ToArray();
        var loaded = models.Select(m => LlamaModel.Load(m.Dir, CPU)).ToArray();
        try
        {
            var sequences = EvalData.LoadTokenIds(eval, seqLen, models[0].Dir);
            long tokens = sequences.Sum(s => (long)s.Length);
            var perplexity = loaded.Select(m => Perplexity.Evaluate(m, sequences, batch, CPU).Value).ToArray();
            void Pass(LlamaModel model)
            {
                using var _ = no_grad();
                foreach (var chunk in sequences.Chunk(batch).Where(c => c.All(s => s.Length == c[0].Length)))
                {
                    using var scope = NewDisposeScope();
                    model.Forward(tensor(chunk.SelectMany(s => s).ToArray(), [chunk.Length, chunk[0].Length]));
                }
            }
            foreach (var m in loaded) Pass(m);
            var seconds = models.Select(_ => new List<double>()).ToArray();
            for (int r = 1; r <= repeat; r++)
            {
                var order = Enumerable.Range(0, models.Length);
                foreach (int i in r % 2 == 1 ? order : order.Reverse())
                {
                    var clock = Stopwatch.StartNew();
                    Pass(loaded[i]);
                    seconds[i].Add(clock.Elapsed.TotalSeconds);
                }
            }
            Console.WriteLine(FormattableString.Invariant($"{sequences.Count} sequences, {tokens} tokens, batches of {batch}, {threads} threads, {repeat} alternating rounds, load {File.ReadAllText("/proc/loadavg").Trim()}"));
            Console.WriteLine("model\tparameters\tfile bytes\tperplexity\ttokens/s median\tmin\tmax\tspeed-up vs first (median of per-round ratios)\traw seconds");
            for (int i = 0; i < models.Length; i++)
            {
                var sorted = seconds[i].Order().ToArray();
                var ratios = seconds[0].Zip(seconds[i], (a, b) => a / b).Order().ToArray();
                long parameters = loaded[i].Parameters.Values.Sum(t => t.numel());
                long bytes = Directory.GetFiles(models[i].Dir, "*.safetensors").Sum(f => new FileInfo(f).Length);
                Console.WriteLine(FormattableString.Invariant(
                    $"{models[i].Label}\t{parameters}\t{bytes}\t{perplexity[i]:F4}\t{tokens / sorted[sorted.Length / 2]:F0}\t{tokens / sorted[^1]:F0}\t{tokens / sorted[0]:F0}\t{ratios[ratios.Length / 2]:F3}\t{string.Join(' ', seconds[i].Select(s => s.ToString("F3", CultureInfo.InvariantCulture)))}"));
            }
            return 0;
        }
        finally
        {
            foreach (var m in loaded) m.Dispose();
        }
    }
}
