using System.Diagnostics;
using System.Globalization;
using Shears.Pruning.Encoders;
using Shears.Pruning.Evaluation;

namespace Shears.Client;

/// <summary>
/// The demo's last table: the dense, the pruned and the pruned + quantized all-MiniLM-L6-v2 measured in this process
/// by ONNX Runtime with the same thread count — bytes on disk, fidelity to the dense model (mean cosine of the sentence
/// embeddings), and latency per batch, timed alternately (forward order on odd rounds, backward on even ones) so that a
/// slow moment of the machine falls on every model alike; the speed-up is the median of the per-round ratios.
/// </summary>
public static class Compression
{
    public sealed record Row(string Label, string Model, long Bytes, double Fidelity, double MillisecondsPerBatch, double SpeedUp);

    public static IReadOnlyList<Row> Measure(IReadOnlyList<(string Label, string Model)> models, string vocabulary, IReadOnlyList<string> sentences,
        int threads = 2, int batch = 32, int rounds = 5)
    {
        var tokenizer = BertTextTokenizer.Create(vocabulary, 128);
        var sessions = models.Select(m => new OnnxBertSession(m.Model, threads)).ToArray();
        try
        {
            var embeddings = sessions.Select(s => s.Embed(sentences, tokenizer, batch)).ToArray(); // also the warm-up
            int batches = (sentences.Count + batch - 1) / batch;
            var times = models.Select(_ => new List<double>()).ToArray();
            for (int r = 1; r <= rounds; r++)
                foreach (int i in r % 2 == 1 ? Enumerable.Range(0, models.Count) : Enumerable.Range(0, models.Count).Reverse())
                {
                    var clock = Stopwatch.StartNew();
                    sessions[i].Embed(sentences, tokenizer, batch);
                    times[i].Add(clock.Elapsed.TotalMilliseconds / batches);
                }
            return models.Select((m, i) =>
            {
                var ratios = times[0].Zip(times[i], (a, b) => a / b).Order().ToArray();
                return new Row(m.Label, m.Model, new FileInfo(m.Model).Length, EmbeddingQuality.Fidelity(embeddings[0], embeddings[i]).Mean,
                    times[i].Order().ElementAt(times[i].Count / 2), ratios[ratios.Length / 2]);
            }).ToArray();
        }
        finally
        {
            foreach (var s in sessions) s.Dispose();
        }
    }

    public static void Print(IReadOnlyList<Row> rows, int threads)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ONNX Runtime in this process, {threads} threads, the models timed alternately:"));
        Console.WriteLine("model                          bytes on disk      fidelity   ms/batch   speed-up");
        foreach (var r in rows)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Label,-30} {r.Bytes,13:N0} ({(double)r.Bytes / rows[0].Bytes,4:F2}x) {r.Fidelity,8:F4} {r.MillisecondsPerBatch,10:F1} {r.SpeedUp,9:F2}x"));
    }
}
