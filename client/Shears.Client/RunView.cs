using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Shears.Contracts;
using Spectre.Console;

namespace Shears.Client;

/// <summary>How runs print: a table of rounds in a terminal, tab-separated lines when redirected, or JSON.</summary>
public static class RunView
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Json(RunStatus status) => JsonSerializer.Serialize(status, JsonOptions);

    public static string RoundLine(RoundResult r, int total) => string.Create(CultureInfo.InvariantCulture,
        $"round {r.Round}/{total}\ttarget {r.TargetSparsity:F4}\tmasked {r.MaskedWeights}\tachieved {r.AchievedSparsity:F4}\tthreshold {(r.Threshold is double t ? t.ToString("G6", CultureInfo.InvariantCulture) : "-")}\t{r.Seconds:F2}s");

    public static void PrintRounds(RunStatus status)
    {
        var table = new Table().Title($"run {status.RunId}").AddColumns("round", "target", "masked weights", "achieved", "threshold", "seconds");
        foreach (var r in status.Rounds)
            table.AddRow(
                r.Round.ToString(CultureInfo.InvariantCulture),
                r.TargetSparsity.ToString("P2", CultureInfo.InvariantCulture),
                r.MaskedWeights.ToString("N0", CultureInfo.InvariantCulture),
                r.AchievedSparsity.ToString("P2", CultureInfo.InvariantCulture),
                r.Threshold is double t ? t.ToString("G6", CultureInfo.InvariantCulture) : "-",
                r.Seconds.ToString("F2", CultureInfo.InvariantCulture));
        AnsiConsole.Write(table);
    }

    public static void PrintStatus(RunStatus status)
    {
        Console.WriteLine($"run {status.RunId}: {status.State.ToString().ToLowerInvariant()} ({status.Phase}), round {status.Round}/{status.TotalRounds}");
        if (status.Error is not null) Console.WriteLine($"error: {status.Error}");
        foreach (var r in status.Rounds) Console.WriteLine(RoundLine(r, status.TotalRounds));
    }
}
