using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Testing;

namespace Shears.Client.Tests.Monitoring;

/// <summary>
/// Runs a real browser in the test itself. Reported as skipped, with the reason, where none is installed and no
/// SHEARS_TEST_REDIS is set either (where the multi-process tests run, a missing Chromium fails the test).
/// </summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (HeadlessChromium.Binary is null && string.IsNullOrEmpty(RedisFactAttribute.Redis))
            Skip = "needs Chromium on the PATH (Debian: apt-get install chromium; .ci/run installs it)";
    }
}

/// <summary>The runs page of a silo, as Chromium shows it, while a multi-round run goes on a three-silo cluster.</summary>
[Collection("redis")]
public class RunsPageTests
{
    [ChromiumFact]
    public async Task TheRunsPageShowsRoundsAsTheyFinish()
    {
        Assert.True(HeadlessChromium.Binary is not null, "SHEARS_TEST_REDIS is set but chromium is not on the PATH (apt-get install chromium)");
        using var dir = new TempDir();
        string ids = MultiProcessTests.WriteTinyDecoder(dir);
        await using var cluster = await SiloCluster.StartAsync(3, dir.Sub("state"));
        const int Rounds = 5;
        var detached = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5", "--rounds", Rounds.ToString(),
            "--schedule", "linear", "--eval", ids, "--finetune-steps", "60", "--finetune-data", ids, "--batch", "2",
            "--cluster", cluster.Address, "--run-id", "paged", "--detach");
        Assert.True(detached.ExitCode == 0, detached + cluster.Logs);

        // The run's server-sent events, read as they come from a third silo.
        using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        var events = ReadEventsAsync(http, $"http://127.0.0.1:{cluster.Silos[2].HttpPort}/api/runs/paged/events");

        // The page is loaded once, from a silo that need not be the coordinator's; its script brings the rounds in.
        string site = $"http://127.0.0.1:{cluster.Silos[1].HttpPort}";
        await using var browser = await HeadlessChromium.StartAsync($"{site}/runs/paged");
        var seen = new List<int>();
        string state = "";
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (state != "completed")
        {
            Assert.True(DateTime.UtcNow < deadline, $"the page did not show the run completed; rounds seen: {string.Join(",", seen)}\n{cluster.Logs}");
            var now = await browser.EvaluateAsync("JSON.stringify({ state: document.body.dataset.state || '', rows: document.querySelectorAll('#rounds tr.round').length })");
            // Nothing while the page is still loading (no body yet).
            if (now is null) { await Task.Delay(100); continue; }
            var page = JsonNode.Parse((string)now!)!;
            state = (string)page["state"]!;
            int rows = (int)page["rows"]!;
            Assert.True(state is "" or "running" or "completed", $"the page shows the run {state}\n{cluster.Logs}");
            if (seen.Count == 0 || seen[^1] != rows) seen.Add(rows);
            await Task.Delay(100);
        }
        Assert.Equal("events", (string?)await browser.EvaluateAsync("document.body.dataset.live || ''"));
        // Rows came one round after another in one page load, some of them while the run was still going.
        Assert.True(seen.SequenceEqual(seen.Order()), $"rounds shown: {string.Join(",", seen)}");
        Assert.Equal(Rounds, seen[^1]);
        Assert.True(seen.Count(n => n is > 0 and < Rounds) >= 1, $"no round appeared before the run ended: {string.Join(",", seen)}");

        // The finished page: a row per round with the report's figures, both charts, the shards of every silo, the report.
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var cells = JsonNode.Parse((string)(await browser.EvaluateAsync(
            "JSON.stringify([...document.querySelectorAll('#rounds tr.round')].map(r => [...r.cells].map(c => c.textContent)))"))!)!.AsArray();
        var rounds = report.RootElement.GetProperty("rounds").EnumerateArray().ToArray();
        Assert.Equal(rounds.Length, cells.Count);
        for (int i = 0; i < rounds.Length; i++)
        {
            var row = cells[i]!.AsArray().Select(c => (string)c!).ToArray();
            Assert.Equal(rounds[i].GetProperty("round").GetInt32().ToString(CultureInfo.InvariantCulture), row[0]);
            Assert.Equal((100 * rounds[i].GetProperty("achievedSparsity").GetDouble()).ToString("F2", CultureInfo.InvariantCulture) + "%", row[2]);
            Assert.Equal(rounds[i].GetProperty("eval").GetProperty("value").GetDouble().ToString("F4", CultureInfo.InvariantCulture), row[5]);
            Assert.Equal(rounds[i].GetProperty("finetuneLoss").GetDouble().ToString("F4", CultureInfo.InvariantCulture), row[6]);
        }
        Assert.Equal(2, (int)(await browser.EvaluateAsync("document.querySelectorAll('#sparsity-chart polyline.series').length"))!);
        // Quality: the evaluation (dense model and every round); the fine-tune loss on its own axis.
        Assert.Equal(Rounds + 1, (int)(await browser.EvaluateAsync("document.querySelectorAll('#quality-chart circle.point').length"))!);
        Assert.False((bool)(await browser.EvaluateAsync("document.getElementById('loss').hidden"))!);
        Assert.Equal(Rounds, (int)(await browser.EvaluateAsync("document.querySelectorAll('#loss-chart circle.point').length"))!);
        // Each chart's axis reads in round numbers that hold every point: ticks evenly spaced by 1, 2 or 5 times a power of ten.
        foreach (var id in new[] { "quality-chart", "loss-chart" })
        {
            var ticks = JsonNode.Parse((string)(await browser.EvaluateAsync(
                $"JSON.stringify([...document.querySelectorAll('#{id} text[text-anchor=end]')].map(t => Number(t.textContent)))"))!)!.AsArray()
                .Select(t => (double)t!).ToArray();
            Assert.True(ticks.Length >= 3, $"{id}: ticks {string.Join(",", ticks)}");
            double step = ticks[1] - ticks[0], power = Math.Pow(10, Math.Floor(Math.Log10(step)));
            Assert.Contains(new[] { 1.0, 2.0, 5.0 }, m => Math.Abs(step / power - m) < 1e-3);
            Assert.All(ticks.Zip(ticks.Skip(1)), p => Assert.Equal(step, p.Second - p.First, 1e-6));
            // Every point lies between the lowest and the highest tick (a tick's label sits 4 px below its line).
            var extent = JsonNode.Parse((string)(await browser.EvaluateAsync(
                $"JSON.stringify({{ ticks: [...document.querySelectorAll('#{id} text[text-anchor=end]')].map(t => Number(t.getAttribute('y')) - 4), " +
                $"points: [...document.querySelectorAll('#{id} circle.point')].map(c => Number(c.getAttribute('cy'))) }})"))!)!;
            var tickYs = extent["ticks"]!.AsArray().Select(t => (double)t!).ToArray();
            Assert.All(extent["points"]!.AsArray().Select(p => (double)p!), cy => Assert.InRange(cy, tickYs.Min() - 1e-6, tickYs.Max() + 1e-6));
        }
        var silos = report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().Count();
        Assert.Equal(silos, (int)(await browser.EvaluateAsync("document.querySelectorAll('#silos tr.silo').length"))!);
        Assert.False((bool)(await browser.EvaluateAsync("document.getElementById('report').hidden"))!);
        string href = (string)(await browser.EvaluateAsync("document.getElementById('report').href"))!;
        Assert.Equal(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")).Trim(), (await http.GetStringAsync(href)).Trim());
        // Nothing the page loaded came from anywhere but the silo.
        var sources = JsonNode.Parse((string)(await browser.EvaluateAsync("JSON.stringify(performance.getEntriesByType('resource').map(e => e.name))"))!)!.AsArray();
        Assert.All(sources, s => Assert.StartsWith(site + "/", (string)s!));
        File.WriteAllBytes(Path.Combine(dir.Path, "run.png"), await browser.ScreenshotAsync());

        // The event stream ended by itself after the finished run's event; rounds only ever grew in it, some came while it ran.
        var streamed = await events.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal("completed", streamed[^1].State);
        Assert.Equal(Rounds, streamed[^1].Rounds);
        Assert.True(streamed.Select(e => e.Rounds).SequenceEqual(streamed.Select(e => e.Rounds).Order()), string.Join(",", streamed));
        Assert.True(streamed.Count(e => e.State == "running" && e.Rounds is > 0 and < Rounds) >= 1, string.Join(",", streamed));
        var unknown = await http.GetAsync($"http://127.0.0.1:{cluster.Silos[2].HttpPort}/api/runs/no-such-run/events");
        Assert.Equal(System.Net.HttpStatusCode.NotFound, unknown.StatusCode);

        // The list of runs, on another silo: the run, completed, all rounds.
        await using var list = await HeadlessChromium.StartAsync($"http://127.0.0.1:{cluster.Silos[2].HttpPort}/");
        string? line = null;
        for (var until = DateTime.UtcNow.AddSeconds(30); line is null && DateTime.UtcNow < until; await Task.Delay(200))
            line = (string?)await list.EvaluateAsync("document.querySelector('#runs tr.run[data-run=\"paged\"]')?.textContent ?? null");
        Assert.NotNull(line);
        Assert.Contains("completed", line);
        Assert.Contains($"{Rounds}/{Rounds}", line);
    }

    private sealed record StreamedStatus(string State, int Rounds);

    /// <summary>Every event of a server-sent event stream until the server ends it, as (state, rounds finished).</summary>
    private static async Task<List<StreamedStatus>> ReadEventsAsync(HttpClient http, string url)
    {
        using var response = await http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var seen = new List<StreamedStatus>();
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            var status = JsonNode.Parse(line["data: ".Length..])!["status"]!;
            seen.Add(new StreamedStatus((string)status["state"]!, status["rounds"]!.AsArray().Count));
        }
        return seen;
    }
}
