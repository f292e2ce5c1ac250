using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Encoders;
using Shears.Pruning.Evaluation;

namespace Shears.MiniLmBench;

/// <summary>
/// Measures pruned all-MiniLM-L6-v2 models (ONNX files written by `shears run`) against the dense model through
/// ONNX Runtime, on aligned sentence pairs (KJV query, WEB match): fidelity (mean and 5th percentile cosine),
/// neighbour agreement@10 over the WEB verses, and paraphrase retrieval KJV → WEB (top-1, MRR) with the corpus
/// embedded by the pruned model and by the dense model.
///
///   minilm-bench measure --dense M --pruned M --pairs F [--vocab V]
///       one model, through the library entry point MiniLmQuality.Measure (its default 256-token limit)
///   minilm-bench table --dense M --pairs F --runs MANIFEST [--vocab V] [--max-length N] [--json OUT] [--markdown OUT]
///       every run of MANIFEST (label TAB recovery TAB output-folder per line); the dense embeddings are computed
///       once; each folder's shears-report.json (last round) is compared with the ONNX Runtime measures
///   minilm-bench latency --models LABEL=PATH,… --sentences F   (see Latency)
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.Error.WriteLine("usage: minilm-bench measure --dense MODEL --pruned MODEL --pairs FILE [--vocab FILE]");
            Console.Error.WriteLine("       minilm-bench table --dense MODEL --pairs FILE --runs MANIFEST [--vocab FILE] [--max-length N] [--json OUT] [--markdown OUT]");
            return 2;
        }
        var options = Options.Parse(args.Skip(1).ToArray());
        return args[0] switch
        {
            "measure" => MeasureOne(options),
            "table" => Table(options),
            "latency" => Latency.Run(options),
            _ => throw new ArgumentException($"unknown command '{args[0]}' (measure, table or latency)"),
        };
    }

    /// <summary>A model path: an .onnx file, or a folder holding model.onnx.</summary>
    private static string ModelFile(string path) => Directory.Exists(path) ? Path.Combine(path, "model.onnx") : path;

    private static string Vocabulary(Options o, string denseModel) =>
        o.Get("--vocab") ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(denseModel))!, "vocab.txt");

    private static int MeasureOne(Options o)
    {
        string dense = ModelFile(o.Require("--dense")), pruned = ModelFile(o.Require("--pruned"));
        var pairs = SentencePairs.Read(o.Require("--pairs"));
        var report = MiniLmQuality.Measure(dense, pruned, Vocabulary(o, dense), pairs, EncoderRuntime.OnnxRuntime);
        Console.WriteLine($"model                     {pruned}");
        Console.WriteLine($"pairs                     {report.Sentences}");
        Console.WriteLine(F($"fidelity mean / p5 / min  {report.Fidelity.Mean:F4} / {report.Fidelity.Percentile5:F4} / {report.Fidelity.Min:F4}"));
        Console.WriteLine(F($"neighbour agreement@10    {report.NeighbourAgreement:F4}"));
        Console.WriteLine(F($"retrieval same model      top-1 {report.Retrieval.SameModel.Top1:F4}  MRR {report.Retrieval.SameModel.Mrr:F4}"));
        Console.WriteLine(F($"retrieval dense corpus    top-1 {report.Retrieval.DenseCorpus.Top1:F4}  MRR {report.Retrieval.DenseCorpus.Mrr:F4}"));
        Console.WriteLine(F($"retrieval dense model     top-1 {report.DenseRetrieval.Top1:F4}  MRR {report.DenseRetrieval.Mrr:F4}"));
        Console.WriteLine(F($"seconds                   {report.Seconds:F1}"));
        return 0;
    }

    private sealed record Run(string Label, string Recovery, string Folder);

    private static int Table(Options o)
    {
        string dense = ModelFile(o.Require("--dense"));
        var pairs = SentencePairs.Read(o.Require("--pairs"));
        int maxLength = int.Parse(o.Get("--max-length") ?? "128", CultureInfo.InvariantCulture);
        var runs = File.ReadLines(o.Require("--runs")).Where(l => l.Trim().Length > 0 && !l.StartsWith('#'))
            .Select(l => l.Split('\t')).Select(c => new Run(c[0], c[1], c[2])).ToArray();
        // The run tokenizes its --eval sentences to at most 128 tokens; the same limit here makes the two measures
        // the same function of the weights, computed by different runtimes.
        var tokenizer = BertTextTokenizer.Create(Vocabulary(o, dense), maxLength);
        var queries = pairs.Select(p => p.Query).ToArray();
        var matches = pairs.Select(p => p.Match).ToArray();
        int truncated = queries.Concat(matches).Count(s => tokenizer.Tokenize(s).Count == maxLength);
        Console.WriteLine($"{pairs.Count} pairs; {truncated} sentences reach the {maxLength}-token limit");

        var clock = Stopwatch.StartNew();
        var denseQueries = MiniLmQuality.Embed(dense, EncoderRuntime.OnnxRuntime, tokenizer, queries);
        var denseMatches = MiniLmQuality.Embed(dense, EncoderRuntime.OnnxRuntime, tokenizer, matches);
        var denseRetrieval = ParaphraseRetrieval.Measure(denseQueries, denseMatches);
        Console.WriteLine(F($"dense model: retrieval top-1 {denseRetrieval.Top1:F4} MRR {denseRetrieval.Mrr:F4} ({clock.Elapsed.TotalSeconds:F1} s)"));

        var rows = new JsonArray();
        foreach (var run in runs)
        {
            clock.Restart();
            string model = Path.Combine(run.Folder, "model.onnx");
            var prunedQueries = MiniLmQuality.Embed(model, EncoderRuntime.OnnxRuntime, tokenizer, queries);
            var prunedMatches = MiniLmQuality.Embed(model, EncoderRuntime.OnnxRuntime, tokenizer, matches);
            var fidelity = EmbeddingQuality.Fidelity(denseMatches, prunedMatches);
            double agreement = EmbeddingQuality.NeighbourAgreement(denseMatches, prunedMatches);
            var retrieval = ParaphraseRetrieval.Measure(prunedQueries, prunedMatches, denseMatches);

            var row = new JsonObject
            {
                ["label"] = run.Label, ["recovery"] = run.Recovery, ["folder"] = run.Folder,
                ["onnxRuntime"] = new JsonObject
                {
                    ["fidelity"] = fidelity.Mean, ["fidelityP5"] = fidelity.Percentile5, ["fidelityMin"] = fidelity.Min,
                    ["neighbourAgreement10"] = agreement,
                    ["retrievalTop1"] = retrieval.SameModel.Top1, ["retrievalMrr"] = retrieval.SameModel.Mrr,
                    ["retrievalDenseCorpusTop1"] = retrieval.DenseCorpus.Top1, ["retrievalDenseCorpusMrr"] = retrieval.DenseCorpus.Mrr,
                },
            };
            string reportPath = Path.Combine(run.Folder, "shears-report.json");
            if (File.Exists(reportPath)) row["report"] = Summarize(reportPath);
            string wallPath = Path.Combine(run.Folder, "wall-seconds");
            if (File.Exists(wallPath)) row["wallSeconds"] = double.Parse(File.ReadAllText(wallPath).Trim(), CultureInfo.InvariantCulture);
            rows.Add(row);

            // The run measured the same sentences through the grains (TorchSharp): the largest difference of any
            // measure both computed.
            string check = "";
            if (row["report"] is JsonObject reported && reported["fidelity"] is { } f)
            {
                var ortMeasures = (JsonObject)row["onnxRuntime"]!;
                double largest = ortMeasures.Where(m => reported[m.Key] is not null)
                    .Max(m => Math.Abs(m.Value!.GetValue<double>() - reported[m.Key]!.GetValue<double>()));
                row["largestDifference"] = largest;
                check = F($"; run's report {f.GetValue<double>():F4} / {reported["fidelityP5"]!.GetValue<double>():F4} / {reported["neighbourAgreement10"]!.GetValue<double>():F4} (largest |Δ| of {ortMeasures.Count(m => reported[m.Key] is not null)} measures {largest:E1})");
            }
            Console.WriteLine(F($"{run.Label,-24} {run.Recovery,-28} fidelity {fidelity.Mean:F4} / p5 {fidelity.Percentile5:F4}  NA@10 {agreement:F4}  " +
                $"same {retrieval.SameModel.Top1:F4}/{retrieval.SameModel.Mrr:F4}  dense-corpus {retrieval.DenseCorpus.Top1:F4}/{retrieval.DenseCorpus.Mrr:F4}{check} ({clock.Elapsed.TotalSeconds:F1} s)"));
        }

        var result = new JsonObject
        {
            ["pairs"] = pairs.Count, ["maxLength"] = maxLength, ["truncatedSentences"] = truncated,
            ["denseRetrieval"] = new JsonObject { ["top1"] = denseRetrieval.Top1, ["mrr"] = denseRetrieval.Mrr },
            ["runs"] = rows,
        };
        if (o.Get("--json") is { } json) File.WriteAllText(json, result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (o.Get("--markdown") is { } markdown) File.WriteAllText(markdown, Markdown(rows));
        return 0;
    }

    /// <summary>What the run's report says of its last round (the dense baseline when there are no rounds).</summary>
    private static JsonObject Summarize(string reportPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(reportPath));
        var root = doc.RootElement;
        var rounds = root.GetProperty("rounds").EnumerateArray().ToArray();
        JsonElement? eval = rounds.Length > 0 && rounds[^1].TryGetProperty("eval", out var e) ? e
            : root.TryGetProperty("baseline", out var b) && b.TryGetProperty("eval", out var be) ? be : null;
        var summary = new JsonObject
        {
            ["runId"] = root.GetProperty("runId").GetString(),
            ["sparsity"] = root.GetProperty("sparsity").GetDouble(),
            ["seconds"] = root.GetProperty("seconds").GetDouble(),
            ["roundSeconds"] = new JsonArray(rounds.Select(r => (JsonNode)JsonValue.Create(r.GetProperty("seconds").GetDouble())).ToArray()),
        };
        if (eval is { } ev)
        {
            summary["fidelity"] = ev.GetProperty("value").GetDouble();
            if (ev.TryGetProperty("measures", out var m))
                foreach (var p in m.EnumerateObject()) summary[p.Name] = p.Value.GetDouble();
        }
        var losses = rounds.Where(r => r.TryGetProperty("finetuneLoss", out var l) && l.ValueKind == JsonValueKind.Number)
            .Select(r => (JsonNode)JsonValue.Create(r.GetProperty("finetuneLoss").GetDouble())).ToArray();
        if (losses.Length > 0) summary["finetuneLoss"] = new JsonArray(losses);
        return summary;
    }

    private static string Markdown(JsonArray rows)
    {
        var s = new StringBuilder();
        s.AppendLine("| method | recovery | sparsity | fidelity mean / p5 | neighbour agr.@10 | retrieval same model top-1 / MRR | retrieval dense corpus top-1 / MRR | wall s (report s) | run's report: fidelity / p5 / NA@10 | largest \\|Δ\\| report vs ONNX Runtime |");
        s.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            var ort = row!["onnxRuntime"]!;
            var report = row["report"];
            double V(JsonNode? n, string key) => n?[key]?.GetValue<double>() ?? double.NaN;
            s.AppendLine(F($"| {row["label"]} | {row["recovery"]} | {V(report, "sparsity"):F3} | {V(ort, "fidelity"):F4} / {V(ort, "fidelityP5"):F4} | {V(ort, "neighbourAgreement10"):F4} | " +
                $"{V(ort, "retrievalTop1"):F4} / {V(ort, "retrievalMrr"):F4} | {V(ort, "retrievalDenseCorpusTop1"):F4} / {V(ort, "retrievalDenseCorpusMrr"):F4} | " +
                $"{V(row, "wallSeconds"):F0} ({V(report, "seconds"):F0}) | {V(report, "fidelity"):F4} / {V(report, "fidelityP5"):F4} / {V(report, "neighbourAgreement10"):F4} | {V(row, "largestDifference"):E1} |"));
        }
        return s.ToString();
    }

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    /// <summary>Concatenated interpolations (formatted under the invariant culture set in Main).</summary>
    private static string F(string s) => s;

    internal sealed class Options
    {
        private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (int i = 0; i < args.Length; i++)
            {
                if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                    throw new ArgumentException($"expected '--option value', got '{args[i]}'");
                o._values[args[i]] = args[++i];
            }
            return o;
        }

        public string? Get(string name) => _values.GetValueOrDefault(name);

        public string Require(string name) => Get(name) ?? throw new ArgumentException($"{name} is required");
    }
}
