using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Shears.Testing;

namespace Shears.Client.Tests.Monitoring;

/// <summary>
/// Runs Prometheus in the test itself. Reported as skipped, with the reason, where it is not installed and no
/// SHEARS_TEST_REDIS is set either; where the multi-process tests run (.ci/run, which installs both) a missing
/// Prometheus fails the test instead of hiding it.
/// </summary>
public sealed class PrometheusFactAttribute : FactAttribute
{
    public static bool Installed => PrometheusServer.Binary is not null && PrometheusServer.Which("promtool") is not null;

    public PrometheusFactAttribute()
    {
        if (!Installed && string.IsNullOrEmpty(RedisFactAttribute.Redis))
            Skip = "needs Prometheus: prometheus and promtool on the PATH (Debian: apt-get install prometheus; .ci/run installs it)";
    }
}

/// <summary>
/// A real Prometheus scraping three silo processes every second while runs with evaluation go through the client:
/// every query of the shipped Grafana dashboard and every alert rule is then executed through Prometheus' HTTP API.
/// </summary>
[Collection("redis")]
public partial class PrometheusTests
{
    private static readonly TimeSpan Scrape = TimeSpan.FromSeconds(1);

    private static string Repo => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../.."));
    private static string Deploy(string path) => Path.Combine(Repo, "deploy", path);

    private static async Task<(int Exit, string Output)> Promtool(params string[] args)
    {
        var info = new ProcessStartInfo(PrometheusServer.Which("promtool")!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        string output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, output);
    }

    /// <summary>The alert rules of deploy/prometheus/alerts.yml: name, expression and the for: line, in order.</summary>
    private static List<(string Name, string Expr)> AlertRules(string yaml)
    {
        var rules = new List<(string, string)>();
        string? name = null;
        foreach (string line in yaml.Split('\n'))
        {
            if (AlertLine().Match(line) is { Success: true } a) name = a.Groups[1].Value;
            else if (ExprLine().Match(line) is { Success: true } e && name is not null) { rules.Add((name, e.Groups[1].Value.Trim())); name = null; }
        }
        return rules;
    }

    [PrometheusFact]
    public async Task EveryDashboardQueryAndAlertRuleAnswersFromARealPrometheus()
    {
        Assert.True(PrometheusFactAttribute.Installed, "SHEARS_TEST_REDIS is set but prometheus or promtool is not on the PATH (apt-get install prometheus)");
        // The shipped configuration and rules load in this Prometheus.
        var config = await Promtool("check", "config", Deploy("prometheus.yml"));
        Assert.True(config.Exit == 0, "promtool check config deploy/prometheus.yml:\n" + config.Output);
        var rulesCheck = await Promtool("check", "rules", Deploy("prometheus/alerts.yml"));
        Assert.True(rulesCheck.Exit == 0, "promtool check rules:\n" + rulesCheck.Output);

        using var dir = new TempDir();
        string ids = MultiProcessTests.WriteTinyDecoder(dir);

        // Three silos: clustered over Redis where the multi-process tests have one, else by the first silo's address.
        await using var cluster = await SiloCluster.StartAsync(3, dir.Sub("state"));
        var silos = cluster.Silos;
        // Prometheus as deploy/prometheus.yml sets it up (same job, role labels and rules), every second, on these silos.
        // The rules are a copy whose for: is one second, so that the alerts fire within the test.
        string rules = File.ReadAllText(Deploy("prometheus/alerts.yml"));
        File.WriteAllText(dir.Sub("alerts.yml"), ForLine().Replace(rules, "${indent}for: 1s"));
        File.WriteAllText(dir.Sub("prometheus.yml"), $"""
            global:
              scrape_interval: 1s
              scrape_timeout: 900ms
              evaluation_interval: 1s
            rule_files:
              - {dir.Sub("alerts.yml")}
            scrape_configs:
              - job_name: shears-silos
                metrics_path: /metrics
                static_configs:
                  - targets: ["127.0.0.1:{silos[0].HttpPort}"]
                    labels:
                      role: coordinator
                  - targets: ["127.0.0.1:{silos[1].HttpPort}", "127.0.0.1:{silos[2].HttpPort}"]
                    labels:
                      role: worker
            """);
        var testConfig = await Promtool("check", "config", dir.Sub("prometheus.yml"));
        Assert.True(testConfig.Exit == 0, testConfig.Output);
        await using var prometheus = await PrometheusServer.StartAsync(dir.Sub("prometheus.yml"), dir.Sub("tsdb"));
        await WaitFor(prometheus, "count(up{job=\"shears-silos\"} == 1) == 3", "all three silos scraped");

        // A run of 20 very short rounds (each far shorter than the scrape interval), and one that fine-tunes.
        string[] Run(string id, string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "linear", "--eval", ids, "--cluster", cluster.Address, "--run-id", id, .. extra];
        var fast = await ShearsProcess.RunAsync(Run("prom-fast", "fast", "--rounds", "20"));
        Assert.True(fast.ExitCode == 0, fast + cluster.Logs);
        var tuned = await ShearsProcess.RunAsync(Run("prom-tuned", "tuned", "--rounds", "3", "--finetune-steps", "2", "--finetune-data", ids, "--batch", "2"));
        Assert.True(tuned.ExitCode == 0, tuned + cluster.Logs);
        // A refused run: the model does not exist (the coordinator refuses it, exit 2).
        var refused = await ShearsProcess.RunAsync(["run", "--model", dir.Sub("missing"), "--out", dir.Sub("never"), "--sparsity", "0.5", "--cluster", cluster.Address, "--run-id", "prom-refused"]);
        Assert.True(refused.ExitCode == 2, refused.ToString());

        // Every round of the fast run is in Prometheus, with the report's figures.
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("fast"), "shears-report.json")));
        var rounds = report.RootElement.GetProperty("rounds").EnumerateArray().ToArray();
        Assert.Equal(20, rounds.Length);
        await WaitFor(prometheus, "count(max by (round) (shears_round_eval{run=\"prom-fast\"})) == 21", "the fast run's 20 rounds and its dense evaluation scraped");
        foreach (var (metric, field) in new[] { ("shears_round_target_sparsity", "targetSparsity"), ("shears_round_achieved_sparsity", "achievedSparsity"), ("shears_round_threshold", "threshold"), ("shears_round_duration_seconds", "seconds") })
        {
            var result = await prometheus.QueryAsync($"max by (round) ({metric}{{run=\"prom-fast\"}})");
            Assert.Null(result.Error);
            var byRound = result.Series.ToDictionary(s => int.Parse(s.Labels["round"], CultureInfo.InvariantCulture), s => s.Values[0]);
            Assert.True(byRound.Count == 20, $"{metric}: {byRound.Count} rounds of 20 in Prometheus");
            foreach (var round in rounds)
            {
                double expected = round.GetProperty(field).GetDouble();
                double actual = byRound[round.GetProperty("round").GetInt32()];
                Assert.True(Math.Abs(expected - actual) <= Math.Abs(expected) * 1e-9, $"{metric} round {round.GetProperty("round")}: {actual}, report {expected}");
            }
        }
        var evals = (await prometheus.QueryAsync("max by (round) (shears_round_eval{run=\"prom-fast\"})")).Series
            .ToDictionary(s => s.Labels["round"], s => s.Values[0]);
        Assert.Equal(report.RootElement.GetProperty("baseline").GetProperty("eval").GetProperty("value").GetDouble(), evals["0"], 1e-9);
        foreach (var round in rounds)
            Assert.Equal(round.GetProperty("eval").GetProperty("value").GetDouble(), evals[round.GetProperty("round").ToString()], 1e-9);

        // Every query of the dashboard, with $run as Grafana sets it (one run, and All), answers with series.
        await WaitFor(prometheus, "sum(shears_runs_refused_total) >= 1", "the refusal counted");
        var dashboard = new GrafanaDashboard(File.ReadAllText(Deploy("grafana/dashboards/shears-rounds.json")));
        var (metricName, label) = dashboard.LabelValuesVariable("run");
        var runs = await prometheus.LabelValuesAsync(label, metricName);
        Assert.Contains("prom-fast", runs);
        Assert.Contains("prom-tuned", runs);
        var range = dashboard.Range;
        var (interval, rateInterval) = GrafanaDashboard.Intervals(range, Scrape);
        var queries = new List<(string Panel, string RefId, string Run, string Expr, bool Instant)>();
        foreach (var run in new[] { dashboard.RegexValue("run", ["prom-tuned"]), dashboard.RegexValue("run", null) })
        {
            var variables = new Dictionary<string, string>
            {
                ["run"] = run, ["__interval"] = GrafanaDashboard.Duration(interval), ["__interval_ms"] = ((long)interval.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
                ["__rate_interval"] = GrafanaDashboard.Duration(rateInterval), ["__range"] = GrafanaDashboard.Duration(range),
                ["__range_s"] = ((long)range.TotalSeconds).ToString(CultureInfo.InvariantCulture), ["__range_ms"] = ((long)range.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
            };
            foreach (var query in dashboard.Queries())
                queries.Add((query.Panel, query.RefId, run, GrafanaDashboard.Substitute(query.Expr, variables), query.Instant));
        }
        Assert.True(queries.Count >= 40, $"only {queries.Count} dashboard queries found");
        // A rate needs two samples of its series: on a loaded machine a scrape can time out, so a query that has no
        // series yet is asked again (the dashboard refreshing) for up to 30 s; an error fails at once.
        var failures = new List<string>();
        var pending = queries;
        var retryUntil = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var end = DateTimeOffset.UtcNow;
            var empty = new List<(string Panel, string RefId, string Run, string Expr, bool Instant)>();
            foreach (var query in pending)
            {
                var result = query.Instant ? await prometheus.QueryAsync(query.Expr) : await prometheus.QueryRangeAsync(query.Expr, end - range, end, interval);
                if (result.Error is not null) failures.Add($"panel '{query.Panel}' query {query.RefId} ($run={query.Run}): error {result.Error}: {query.Expr}");
                else if (result.Series.Length == 0) empty.Add(query);
            }
            pending = empty;
            if (pending.Count == 0 || failures.Count > 0 || DateTime.UtcNow > retryUntil) break;
            await Task.Delay(2000);
        }
        failures.AddRange(pending.Select(q => $"panel '{q.Panel}' query {q.RefId} ($run={q.Run}): no series for 30 s: {q.Expr}"));
        Assert.True(failures.Count == 0, string.Join("\n", failures));

        // Every alert rule's expression executes; the quantity it compares has series (its condition is false here
        // unless made true below).
        var alertRules = AlertRules(rules);
        Assert.Equal(new[] { "ShearsSiloDown", "ShearsRunFailed", "ShearsRoundStalled", "ShearsSiloMemoryNearLimit" }, alertRules.Select(r => r.Name));
        foreach (var (name, expr) in alertRules)
        {
            var result = await prometheus.QueryAsync(expr);
            Assert.True(result.Error is null, $"alert {name}: {result.Error}: {expr}");
            string measured = Comparison().Replace(expr, "");
            Assert.NotEqual(expr, measured);
            // A stalled round needs an unfinished run: every run here has finished, so its quantity is checked while one runs below.
            if (name == "ShearsRoundStalled") continue;
            var quantity = await prometheus.QueryAsync(measured);
            Assert.True(quantity.Error is null && quantity.Series.Length > 0, $"alert {name}: '{measured}' gives {(quantity.Error ?? "no series")}");
        }

        // The refused run fires ShearsRunFailed; a killed silo fires ShearsSiloDown, naming it.
        await WaitFor(prometheus, "ALERTS{alertname=\"ShearsRunFailed\",alertstate=\"firing\"}", "ShearsRunFailed firing after the refused run");
        var stalled = alertRules.Single(r => r.Name == "ShearsRoundStalled").Expr;
        var slow = ShearsProcess.RunAsync(Run("prom-slow", "slow", "--rounds", "3", "--finetune-steps", "40", "--finetune-data", ids, "--batch", "2"));
        await WaitFor(prometheus, Comparison().Replace(stalled, "") + " >= 0", "the progress of an unfinished run");
        var slowResult = await slow;
        Assert.True(slowResult.ExitCode == 0, slowResult.ToString());
        Assert.Empty((await prometheus.QueryAsync("ALERTS{alertname=\"ShearsSiloDown\"}")).Series);
        silos[2].Kill();
        await WaitFor(prometheus, $"ALERTS{{alertname=\"ShearsSiloDown\",alertstate=\"firing\",instance=\"127.0.0.1:{silos[2].HttpPort}\"}}", "ShearsSiloDown firing for the killed silo");
    }

    /// <summary>Waits until an instant query returns a series (60 s at most).</summary>
    private static async Task WaitFor(PrometheusServer prometheus, string expr, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        QueryResult last;
        while ((last = await prometheus.QueryAsync(expr)).Series.Length == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited 60 s for {what} ({expr}): {last.Error ?? "no series"}\n{prometheus.Log}");
            await Task.Delay(250);
        }
    }

    [GeneratedRegex(@"^\s*- alert:\s*(\S+)\s*$")]
    private static partial Regex AlertLine();

    [GeneratedRegex(@"^\s*expr:\s*(.+)$")]
    private static partial Regex ExprLine();

    [GeneratedRegex(@"^(?<indent>\s*)for:\s*\S+\s*$", RegexOptions.Multiline)]
    private static partial Regex ForLine();

    /// <summary>The comparison with a number that ends an alert expression.</summary>
    [GeneratedRegex(@"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$")]
    private static partial Regex Comparison();
}
