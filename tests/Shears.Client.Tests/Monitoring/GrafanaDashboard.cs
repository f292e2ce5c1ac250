using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Shears.Client.Tests.Monitoring;

/// <summary>One query of a dashboard panel: its panel, refId, PromQL as written, and whether Grafana runs it instant.</summary>
public sealed record PanelQuery(string Panel, string RefId, string Expr, bool Instant);

/// <summary>
/// Reads a Grafana dashboard's Prometheus queries and substitutes its variables as Grafana does before sending them:
/// the dashboard's own ($run), and the built-in intervals ($__interval, $__rate_interval, $__range …).
/// </summary>
public sealed partial class GrafanaDashboard
{
    private readonly JsonElement _root;

    public GrafanaDashboard(string json) => _root = JsonDocument.Parse(json).RootElement.Clone();

    /// <summary>The dashboard's time range ("now-30m" to "now"), as a length.</summary>
    public TimeSpan Range
    {
        get
        {
            string from = _root.GetProperty("time").GetProperty("from").GetString()!;
            var match = RelativeTime().Match(from);
            Assert.True(match.Success, $"the dashboard's time range starts at '{from}', not now-N[smhd]");
            double n = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            return match.Groups[2].Value switch { "s" => TimeSpan.FromSeconds(n), "m" => TimeSpan.FromMinutes(n), "h" => TimeSpan.FromHours(n), _ => TimeSpan.FromDays(n) };
        }
    }

    /// <summary>Every query of every panel, those inside collapsed rows too.</summary>
    public IEnumerable<PanelQuery> Queries()
    {
        foreach (var panel in Panels(_root.GetProperty("panels")))
        {
            if (!panel.TryGetProperty("targets", out var targets)) continue;
            string title = panel.GetProperty("title").GetString()!;
            foreach (var target in targets.EnumerateArray())
            {
                if (!target.TryGetProperty("expr", out var expr)) continue;
                bool instant = target.TryGetProperty("instant", out var i) && i.GetBoolean()
                    && !(target.TryGetProperty("range", out var r) && r.GetBoolean());
                yield return new PanelQuery(title, target.GetProperty("refId").GetString()!, expr.GetString()!, instant);
            }
        }
    }

    private static IEnumerable<JsonElement> Panels(JsonElement panels)
    {
        foreach (var panel in panels.EnumerateArray())
        {
            yield return panel;
            if (panel.TryGetProperty("panels", out var inner))
                foreach (var p in Panels(inner)) yield return p;
        }
    }

    /// <summary>A query variable's definition, e.g. label_values(shears_run_round, run).</summary>
    public (string Metric, string Label) LabelValuesVariable(string name)
    {
        var variable = _root.GetProperty("templating").GetProperty("list").EnumerateArray().Single(v => v.GetProperty("name").GetString() == name);
        var match = LabelValues().Match(variable.GetProperty("definition").GetString()!);
        Assert.True(match.Success, $"variable {name} is not label_values(metric, label)");
        return (match.Groups[1].Value, match.Groups[2].Value);
    }

    /// <summary>
    /// The value Grafana gives a multi-value variable inside a regex matcher: one value escaped, several as (a|b), and
    /// the variable's allValue for "All".
    /// </summary>
    public string RegexValue(string name, IReadOnlyList<string>? values)
    {
        if (values is null)
            return _root.GetProperty("templating").GetProperty("list").EnumerateArray().Single(v => v.GetProperty("name").GetString() == name).GetProperty("allValue").GetString()!;
        var escaped = values.Select(v => RegexSpecial().Replace(v, m => "\\\\" + m.Value)).ToArray();
        return escaped.Length == 1 ? escaped[0] : $"({string.Join('|', escaped)})";
    }

    /// <summary>
    /// Grafana's interval for a panel of the given width in points: the range over the points, at least the data
    /// source's scrape interval, rounded as Grafana rounds it; $__rate_interval is max($__interval + scrape, 4 × scrape).
    /// </summary>
    public static (TimeSpan Interval, TimeSpan RateInterval) Intervals(TimeSpan range, TimeSpan scrape, int points = 1000)
    {
        var raw = TimeSpan.FromMilliseconds(Math.Max(scrape.TotalMilliseconds, range.TotalMilliseconds / points));
        double[] steps = [1000, 2000, 5000, 10000, 15000, 20000, 30000, 60000, 120000, 300000, 600000, 900000, 1200000, 1800000, 3600000];
        double[] limits = [1500, 3500, 7500, 12500, 17500, 25000, 45000, 90000, 180000, 450000, 750000, 1050000, 1500000, 2700000];
        double ms = steps[^1];
        for (int i = 0; i < limits.Length; i++)
            if (raw.TotalMilliseconds < limits[i]) { ms = steps[i]; break; }
        var interval = TimeSpan.FromMilliseconds(Math.Max(ms, scrape.TotalMilliseconds));
        var rate = interval + scrape > 4 * scrape ? interval + scrape : 4 * scrape;
        return (interval, rate);
    }

    /// <summary>Substitutes $name, ${name} and [[name]] of the given variables, the longest names first.</summary>
    public static string Substitute(string expr, IReadOnlyDictionary<string, string> variables) =>
        Variable().Replace(expr, m =>
        {
            string name = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Success ? m.Groups[2].Value : m.Groups[3].Value;
            return variables.TryGetValue(name, out var value) ? value : throw new InvalidOperationException($"no value for the variable ${name} in {expr}");
        });

    public static string Duration(TimeSpan t) => t.TotalSeconds % 60 == 0 && t.TotalSeconds >= 60 ? $"{t.TotalMinutes:0}m" : $"{t.TotalSeconds:0}s";

    [GeneratedRegex(@"^now-(\d+)([smhd])$")]
    private static partial Regex RelativeTime();

    [GeneratedRegex(@"^label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)$")]
    private static partial Regex LabelValues();

    [GeneratedRegex(@"[\\^$.|?*+()\[\]{}]")]
    private static partial Regex RegexSpecial();

    [GeneratedRegex(@"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")]
    private static partial Regex Variable();
}
