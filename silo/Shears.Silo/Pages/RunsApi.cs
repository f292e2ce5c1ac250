using System.Text.Json;
using Shears.Contracts;

namespace Shears.Silo.Pages;

/// <summary>
/// Runs submitted over the silo's HTTP port (--http-runs), for clients that carry no Orleans client:
/// <c>POST /api/runs/RUN</c> with the run's spec as JSON starts it (the coordinator's answer as JSON; 400 with
/// <c>{"error": …}</c> when it is refused), <c>GET /api/runs/RUN/statuses</c> streams its statuses as JSON lines
/// (one now, one per change and heartbeat, the last one finished), <c>POST /api/runs/RUN/cancel</c> cancels it. The
/// read-only routes of <see cref="RunsPages"/> give the rest (a status, the list, the report). Over HTTPS the two
/// POST routes answer only connections that presented a certificate the cluster's CA signed (Kestrel has checked it).
/// </summary>
public static class RunsApi
{
    public const string StatusesPath = "statuses";

    public static WebApplication MapRunsApi(this WebApplication app, bool requireCertificate)
    {
        app.MapPost("/api/runs/{run}", async (string run, HttpContext http, IGrainFactory grains) =>
        {
            if (Refused(http, requireCertificate, "start runs") is { } refused) return refused;
            RunSpec? spec;
            try { spec = await JsonSerializer.DeserializeAsync<RunSpec>(http.Request.Body, RunJson.Options, http.RequestAborted); }
            catch (JsonException e) { return Error(StatusCodes.Status400BadRequest, $"the request's body is not a run spec: {e.Message}"); }
            if (spec is null) return Error(StatusCodes.Status400BadRequest, "the request's body is not a run spec: null");
            try { return Results.Json(await grains.GetGrain<IRunGrain>(run).StartAsync(spec), RunJson.Options); }
            catch (RunRejectedException e) { return Error(StatusCodes.Status400BadRequest, e.Message); }
        });
        app.MapPost("/api/runs/{run}/cancel", async (string run, HttpContext http, IGrainFactory grains) =>
        {
            if (Refused(http, requireCertificate, "cancel runs") is { } refused) return refused;
            var grain = grains.GetGrain<IRunGrain>(run);
            if ((await grain.GetStatusAsync()).Spec is null) return Error(StatusCodes.Status404NotFound, $"no run '{run}' on this cluster");
            return Results.Json(await grain.CancelAsync(), RunJson.Options);
        });
        app.MapGet($"/api/runs/{{run}}/{StatusesPath}", Statuses);
        return app;
    }

    private static IResult? Refused(HttpContext http, bool requireCertificate, string what) =>
        requireCertificate && http.Connection.ClientCertificate is null
            ? Error(StatusCodes.Status403Forbidden, $"to {what} over HTTPS a client presents a certificate the cluster's CA signed (--tls-cert, --tls-key, --tls-ca)")
            : null;

    private static IResult Error(int status, string message) => Results.Json(new { error = message }, RunJson.Options, statusCode: status);

    /// <summary>
    /// The run's statuses as JSON lines, flushed one by one, until the finished one. A stream broken by a lost
    /// coordinator ends the response early; the client asks again, which re-activates the coordinator.
    /// </summary>
    private static async Task Statuses(string run, IGrainFactory grains, HttpContext http)
    {
        var grain = grains.GetGrain<IRunGrain>(run);
        var token = http.RequestAborted;
        var first = await grain.GetStatusAsync();
        if (first.Spec is null)
        {
            http.Response.StatusCode = StatusCodes.Status404NotFound;
            await http.Response.WriteAsJsonAsync(new { error = $"no run '{run}' on this cluster" }, RunJson.Options, token);
            return;
        }
        http.Response.ContentType = "application/x-ndjson";
        http.Response.Headers.CacheControl = "no-store";
        try
        {
            await foreach (var status in grain.WatchAsync(token).WithCancellation(token))
            {
                await http.Response.WriteAsync(JsonSerializer.Serialize(status, RunJson.Options) + "\n", token);
                await http.Response.Body.FlushAsync(token);
                if (status.IsFinished) break;
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested) { }
        // The stream broke (a lost coordinator, an enumeration the silo no longer knows): the response ends unfinished.
        catch (Exception) when (!token.IsCancellationRequested) { }
    }
}
