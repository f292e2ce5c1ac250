using System.Reflection;
using System.Text.Json;
using Shears.Contracts;

namespace Shears.Silo.Pages;

/// <summary>
/// The runs page every silo serves on its HTTP port: <c>/</c> lists the cluster's runs, <c>/runs/RUN</c> shows one run's
/// rounds, charts and shards and follows it live through the server-sent events of <c>/api/runs/RUN/events</c> (its JSON once at <c>/api/runs/RUN</c>); <c>/runs/RUN/report</c> downloads its
/// report. Every asset comes from this assembly, so the pages work with no network beyond the silo.
/// </summary>
public static class RunsPages
{
    private static JsonSerializerOptions Json => RunJson.Options;

    /// <summary>One line of the runs list.</summary>
    public sealed record RunLine(string RunId, string State, string Phase, int Round, int TotalRounds, int FinishedRounds,
        double? AchievedSparsity, double? TargetSparsity, string? Model, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, string? Error);

    /// <summary>A run's page data: its status, and its shards grouped by silo.</summary>
    public sealed record RunPage(RunStatus Status, IReadOnlyList<SiloShards> Silos, bool HasReport);

    public sealed record SiloShards(string Silo, int Shards, long Elements, IReadOnlyList<string> Tensors);

    public static WebApplication MapRunsPages(this WebApplication app)
    {
        app.MapGet("/", () => Page("Shears runs", "runs.html"));
        app.MapGet("/runs/{run}", (string run) => Page($"Shears run {run}", "run.html"));
        app.MapGet("/assets/{name}", (string name) => Asset(name));
        app.MapGet("/api/runs", async (IGrainFactory grains) =>
        {
            var ids = await grains.GetGrain<IRunRegistryGrain>(0).ListAsync();
            var statuses = await Task.WhenAll(ids.Select(id => grains.GetGrain<IRunGrain>(id).GetStatusAsync()));
            var lines = statuses.Where(s => s.Spec is not null).OrderByDescending(s => s.StartedAt).Select(s => new RunLine(
                s.RunId, s.State.ToString().ToLowerInvariant(), s.Phase, s.Round, s.TotalRounds, s.Rounds.Count,
                s.Rounds.Count > 0 ? s.Rounds[^1].AchievedSparsity : null, s.Spec?.Sparsity, s.Spec?.ModelPath, s.StartedAt, s.FinishedAt, s.Error));
            return Results.Json(lines, Json);
        });
        app.MapGet("/api/runs/{run}", async (string run, IGrainFactory grains) =>
        {
            var grain = grains.GetGrain<IRunGrain>(run);
            var status = await grain.GetStatusAsync();
            if (status.Spec is null) return Results.NotFound(new { error = $"no run '{run}' on this cluster" });
            return Results.Json(await PageOf(grain, status), Json);
        });
        app.MapGet("/api/runs/{run}/events", Events);
        app.MapGet("/runs/{run}/report", async (string run, IGrainFactory grains) =>
            await grains.GetGrain<IRunGrain>(run).GetReportJsonAsync() is { } report
                ? Results.File(System.Text.Encoding.UTF8.GetBytes(report), "application/json", $"{run}-shears-report.json")
                : Results.NotFound(new { error = $"run '{run}' has no report (not finished, failed, or unknown)" }));
        return app;
    }

    private static async Task<RunPage> PageOf(IRunGrain grain, RunStatus status)
    {
        var shards = await grain.GetShardsAsync();
        var silos = shards.GroupBy(s => s.Silo).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => new SiloShards(g.Key, g.Count(), g.Sum(s => s.Elements), g.SelectMany(s => s.Tensors).Distinct().ToArray())).ToArray();
        return new RunPage(status, silos, status.State == RunState.Completed);
    }

    /// <summary>
    /// The run's page data as server-sent events: one event now, one per change of the run's status stream (and its
    /// heartbeats), the stream closed after the event of a finished run. A stream broken by a lost coordinator ends
    /// the response; the browser's EventSource reconnects after <c>retry</c> and gets the status afresh.
    /// </summary>
    private static async Task Events(string run, IGrainFactory grains, HttpContext http)
    {
        var grain = grains.GetGrain<IRunGrain>(run);
        var first = await grain.GetStatusAsync();
        if (first.Spec is null)
        {
            http.Response.StatusCode = StatusCodes.Status404NotFound;
            await http.Response.WriteAsJsonAsync(new { error = $"no run '{run}' on this cluster" });
            return;
        }
        var token = http.RequestAborted;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-store";
        await http.Response.WriteAsync("retry: 1000\n\n", token);
        try
        {
            await foreach (var status in grain.WatchAsync(token).WithCancellation(token))
            {
                string data = JsonSerializer.Serialize(await PageOf(grain, status), Json);
                await http.Response.WriteAsync($"data: {data}\n\n", token);
                await http.Response.Body.FlushAsync(token);
                if (status.IsFinished) break;
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested) { }
        // The stream broke (a lost coordinator, an enumeration the silo no longer knows): the browser reconnects.
        catch (Exception) when (!token.IsCancellationRequested) { }
    }

    /// <summary>A page: the shared head (the silo's own stylesheet and script) around one of the bodies in Pages/.</summary>
    private static IResult Page(string title, string body)
    {
        using var reader = new StreamReader(Resource(body)!);
        return Results.Content($"""
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>{System.Net.WebUtility.HtmlEncode(title)}</title>
            <link rel="stylesheet" href="/assets/page.css">
            <script src="/assets/page.js"></script>
            </head>
            <body>
            {reader.ReadToEnd()}</body>
            </html>
            """, "text/html; charset=utf-8");
    }

    private static Stream? Resource(string name) => Assembly.GetExecutingAssembly().GetManifestResourceStream($"Shears.Silo.Pages.{name}");

    private static IResult Asset(string name)
    {
        string? type = Path.GetExtension(name) switch { ".js" => "text/javascript; charset=utf-8", ".css" => "text/css; charset=utf-8", _ => null };
        var stream = type is null ? null : Resource(name);
        return stream is null ? Results.NotFound() : Results.Stream(stream, type);
    }
}
