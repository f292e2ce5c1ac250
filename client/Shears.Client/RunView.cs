using System.Globalization;
using System.Text.Json;
using Shears.Contracts;
using Spectre.Console;

namespace Shears.Client;

/// <summary>How runs print: a table of rounds in a terminal, tab-separated lines when redirected, or JSON.</summary>
public static class RunView
{
    public static string Json(RunStatus status) => JsonSerializer.Serialize(status, RunJson.Indented);

    public static string RoundLine(RoundResult r, int total) => string.Create(CultureInfo.InvariantCulture,
        $"round {r.Round}/{total}\ttarget {r.TargetSparsity:F4}\tmasked {r.MaskedWeights}\tachieved {r.AchievedSparsity:F4}\tthreshold {(r.Threshold is double t ? t.ToString("G6", CultureInfo.InvariantCulture) : "-")}{(r.FinetuneLoss is double l ? $"\tloss {l:F4}" : "")}{(r.Eval is { } e ? $"\t{e.Metric} {e.Value:F4}" : "")}\t{r.Seconds:F2}s");

    private static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    public static void PrintRounds(RunStatus status)
    {
        // Redirected output has no terminal width: keep the table on one line per round.
        if (Console.IsOutputRedirected && AnsiConsole.Profile.Width < 160) AnsiConsole.Profile.Width = 160;
        bool eval = status.Baseline is not null || status.Rounds.Any(r => r.Eval is not null);
        bool neighbours = status.Baseline?.Measures?.ContainsKey("neighbourAgreement10") == true;
        string Neighbours(EvalMetric? e) => e?.Measures is { } m && m.TryGetValue("neighbourAgreement10", out double v) ? F(v, "F4") : "-";
        bool loss = status.Rounds.Any(r => r.FinetuneLoss is not null);
        var table = new Table().Title($"run {status.RunId}").AddColumns("round", "target", "masked weights", "achieved", "threshold");
        if (loss) table.AddColumn("fine-tune loss");
        if (eval) table.AddColumn(status.Baseline?.Metric ?? "eval");
        if (neighbours) table.AddColumn("neighbours@10");
        table.AddColumn("seconds");
        if (status.Baseline is { } b)
        {
            var row = new List<string> { "dense", "-", "-", "-", "-" };
            if (loss) row.Add("-");
            row.Add(F(b.Value, "F4"));
            if (neighbours) row.Add(Neighbours(b));
            row.Add("-");
            table.AddRow(row.ToArray());
        }
        foreach (var r in status.Rounds)
        {
            var row = new List<string>
            {
                r.Round.ToString(CultureInfo.InvariantCulture), F(r.TargetSparsity, "P2"), F(r.MaskedWeights, "N0"), F(r.AchievedSparsity, "P2"),
                r.Threshold is double t ? F(t, "G6") : "-",
            };
            if (loss) row.Add(r.FinetuneLoss is double l ? F(l, "F4") : "-");
            if (eval) row.Add(r.Eval is { } e ? F(e.Value, "F4") : "-");
            if (neighbours) row.Add(Neighbours(r.Eval));
            row.Add(F(r.Seconds, "F2"));
            table.AddRow(row.ToArray());
        }
        AnsiConsole.Write(table);
    }

    public static void PrintStatus(RunStatus status)
    {
        Console.WriteLine($"run {status.RunId}: {status.State.ToString().ToLowerInvariant()} ({status.Phase}), round {status.Round}/{status.TotalRounds}");
        if (status.Error is not null) Console.WriteLine($"error: {status.Error}");
        // The table `shears run` prints at its end, with the rounds finished so far.
        if (status.Rounds.Count > 0 || status.Baseline is not null) PrintRounds(status);
    }
}
