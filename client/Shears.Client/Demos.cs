using System.Globalization;
using System.Text.Json;
using Shears.Contracts;

namespace Shears.Client;

/// <summary>
/// The main demo: all-MiniLM-L6-v2 (a real pretrained encoder, from its NuGet package) pruned to 50%
/// global magnitude sparsity in three cubic rounds, distilled toward the dense model between rounds,
/// and measured each round on held-out real English.
/// </summary>
public static class Demos
{
    public const string PlotFile = "sparsity-quality.png";

    /// <summary>The quantization the demo ends with (bench/Compression.md: the one ONNX Runtime runs fastest here).</summary>
    public const string DemoScheme = RunOptions.QuantSchemes.W8A8;

    public static async Task<int> MiniLmAsync(string root, ClusterTarget cluster, CancellationToken token)
    {
        string modelDir = Path.Combine(root, "model");
        var files = Shears.Pruning.Onnx.MiniLmModel.Extract(modelDir);
        Console.WriteLine($"wrote all-MiniLM-L6-v2 to {modelDir}");

        // Old Testament verse pairs (public domain): evaluate on WEB verses, distill on KJV verses of other chapters.
        string pairs = Path.Combine(AppContext.BaseDirectory, "data", "bible-ot-sample-2000.tsv");
        var rows = File.ReadLines(pairs).Select(l => l.Split('\t')).Where(c => c.Length == 3).ToArray();
        // The evaluation file keeps the pairs: the WEB verse (the corpus) last, its KJV twin (the query) before it.
        string eval = Path.Combine(root, "eval-pairs.tsv"), distill = Path.Combine(root, "distill-kjv.txt");
        var evalPairs = rows.Where((_, i) => i % 6 == 0).Select(c => string.Join('\t', c)).ToArray();
        var distillVerses = rows.Where((_, i) => i % 6 == 3).Select(c => c[1]).ToArray();
        File.WriteAllLines(eval, evalPairs);
        File.WriteAllLines(distill, distillVerses);
        Console.WriteLine($"evaluation: {evalPairs.Length} WEB verses and their KJV twins; distillation: {distillVerses.Length} KJV verses of other chapters (from {pairs})");

        string output = Path.Combine(root, "pruned");
        var spec = new RunSpec
        {
            ModelPath = files.ModelPath, OutputPath = output, Sparsity = 0.5, Scope = RunOptions.Scopes.Global,
            Schedule = RunOptions.Schedules.Cubic, Rounds = 3, Force = true, EvalData = eval,
            FinetuneSteps = 20, FinetuneData = distill, LearningRate = 2e-5, Batch = 16,
        };
        int code = await RunFollower.RunAsync(cluster, spec, Commands.NewRunId(), detach: false, token);
        if (code != Commands.Ok) return code;
        // Prune, then quantize: the pruned model's MatMuls as ONNX Runtime runs them quantized, nothing pruned anew.
        string compressed = Path.Combine(root, "compressed");
        code = await RunFollower.RunAsync(cluster, new RunSpec
        {
            ModelPath = Path.Combine(output, "model.onnx"), OutputPath = compressed, Sparsity = 0, Force = true, Quantize = DemoScheme,
        }, Commands.NewRunId(), detach: false, token);
        if (code != Commands.Ok) return code;
        // 96 of the evaluation verses keep the timing short (three batches, four passes of each model).
        var sentences = evalPairs.Select(p => p.Split('\t')[^1]).Take(96).ToArray();
        var measured = Compression.Measure([("dense", files.ModelPath), ("50% pruned", Path.Combine(output, "model.onnx")),
            ($"50% pruned + {DemoScheme}", Path.Combine(compressed, "model.onnx"))], files.VocabularyPath, sentences, rounds: 3);
        Compression.Print(measured, 2);

        string plot = Path.Combine(output, PlotFile);
        var last = measured[^1];
        Plot(Path.Combine(output, "shears-report.json"), plot, [new PlotMark(spec.Sparsity, last.Fidelity, string.Create(CultureInfo.InvariantCulture,
            $"{last.Label} in ONNX Runtime: fidelity {last.Fidelity:F3}, {(double)last.Bytes / measured[0].Bytes:F2}x the bytes, {last.SpeedUp:F2}x the speed"))]);
        Console.WriteLine($"plotted sparsity against fidelity and neighbour agreement, with the compressed model: {plot}");
        return Commands.Ok;
    }

    /// <summary>A model measured outside the run (the compressed one), drawn as one marker with its own legend entry.</summary>
    public sealed record PlotMark(double Sparsity, double Fidelity, string Label);

    /// <summary>Sparsity against fidelity and neighbour agreement, from the report: dense first, then each round; then the marks.</summary>
    public static void Plot(string reportPath, string pngPath, IReadOnlyList<PlotMark>? marks = null)
    {
        using var report = JsonDocument.Parse(File.ReadAllText(reportPath));
        var points = new List<(double Sparsity, double Fidelity, double Agreement)>();
        void Add(double sparsity, JsonElement eval)
        {
            double agreement = eval.TryGetProperty("measures", out var m) && m.TryGetProperty("neighbourAgreement10", out var a) ? a.GetDouble() : double.NaN;
            points.Add((sparsity, eval.GetProperty("value").GetDouble(), agreement));
        }
        if (report.RootElement.TryGetProperty("baseline", out var baseline)) Add(0, baseline.GetProperty("eval"));
        foreach (var round in report.RootElement.GetProperty("rounds").EnumerateArray())
            if (round.TryGetProperty("eval", out var eval)) Add(round.GetProperty("achievedSparsity").GetDouble(), eval);

        var plot = new ScottPlot.Plot();
        var fidelity = plot.Add.Scatter(points.Select(p => p.Sparsity).ToArray(), points.Select(p => p.Fidelity).ToArray());
        fidelity.LegendText = "fidelity (mean cosine to the dense embeddings)";
        var agreement = plot.Add.Scatter(points.Select(p => p.Sparsity).ToArray(), points.Select(p => p.Agreement).ToArray());
        agreement.LegendText = "neighbour agreement at 10";
        foreach (var mark in marks ?? [])
        {
            var marker = plot.Add.Marker(mark.Sparsity, mark.Fidelity, ScottPlot.MarkerShape.FilledDiamond, 14);
            marker.LegendText = mark.Label;
        }
        plot.Title(string.Create(CultureInfo.InvariantCulture, $"{report.RootElement.GetProperty("runId").GetString()}: quality against sparsity"));
        plot.XLabel("sparsity of the prunable weights");
        plot.YLabel("agreement with the dense model");
        plot.Axes.SetLimitsY(0, 1.05);
        plot.ShowLegend(ScottPlot.Alignment.LowerLeft);
        string temp = pngPath + ".tmp.png";
        plot.SavePng(temp, 800, 500);
        File.Move(temp, pngPath, overwrite: true);
    }
}
