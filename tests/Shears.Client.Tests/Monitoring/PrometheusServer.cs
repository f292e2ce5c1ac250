using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Shears.Client.Tests.Monitoring;

/// <summary>A real Prometheus server (Debian's /usr/bin/prometheus) in a temporary folder, queried over its HTTP API.</summary>
public sealed class PrometheusServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };
    private readonly ProcessLog _log;

    private PrometheusServer(Process process, int port)
    {
        _process = process;
        Port = port;
        _log = new ProcessLog(process);
    }

    public int Port { get; }
    public string Log => _log.ToString();

    /// <summary>The Prometheus binary on the PATH, or null.</summary>
    public static string? Binary => Which("prometheus");

    public static string? Which(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':').Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    /// <summary>Starts Prometheus with the configuration in <paramref name="configPath"/>, its data beside it, on a free port.</summary>
    public static async Task<PrometheusServer> StartAsync(string configPath, string dataDir)
    {
        int port = SiloProcess.FreePort();
        var info = new ProcessStartInfo(Binary ?? throw new InvalidOperationException("prometheus is not installed"))
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string a in new[] { $"--config.file={configPath}", $"--storage.tsdb.path={dataDir}", $"--web.listen-address=127.0.0.1:{port}" })
            info.ArgumentList.Add(a);
        var server = new PrometheusServer(Process.Start(info)!, port);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            Assert.False(server._process.HasExited, "prometheus exited:\n" + server.Log);
            try
            {
                using var ready = await server._http.GetAsync($"http://127.0.0.1:{port}/-/ready");
                if (ready.IsSuccessStatusCode) return server;
            }
            catch (HttpRequestException) { }
            Assert.True(DateTime.UtcNow < deadline, "prometheus did not become ready:\n" + server.Log);
            await Task.Delay(200);
        }
    }

    /// <summary>An instant query (/api/v1/query): the result vector, or the error Prometheus gave.</summary>
    public Task<QueryResult> QueryAsync(string expr) => GetAsync("query", [("query", expr)]);

    /// <summary>A range query (/api/v1/query_range), as Grafana runs a time-series panel.</summary>
    public Task<QueryResult> QueryRangeAsync(string expr, DateTimeOffset start, DateTimeOffset end, TimeSpan step) =>
        GetAsync("query_range", [("query", expr), ("start", Seconds(start)), ("end", Seconds(end)), ("step", step.TotalSeconds.ToString(CultureInfo.InvariantCulture))]);

    /// <summary>The values of a label over the series that match <paramref name="match"/> (Grafana's label_values()).</summary>
    public async Task<string[]> LabelValuesAsync(string label, string match)
    {
        string json = await _http.GetStringAsync($"http://127.0.0.1:{Port}/api/v1/label/{label}/values?match[]={Uri.EscapeDataString(match)}");
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("data").EnumerateArray().Select(v => v.GetString()!).ToArray();
    }

    private static string Seconds(DateTimeOffset t) => (t.ToUnixTimeMilliseconds() / 1000.0).ToString(CultureInfo.InvariantCulture);

    private async Task<QueryResult> GetAsync(string endpoint, (string Name, string Value)[] parameters)
    {
        string query = string.Join("&", parameters.Select(p => $"{p.Name}={Uri.EscapeDataString(p.Value)}"));
        using var response = await _http.GetAsync($"http://127.0.0.1:{Port}/api/v1/{endpoint}?{query}");
        string body = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(body);
        var root = doc.RootElement;
        if (root.GetProperty("status").GetString() != "success")
            return new QueryResult([], root.TryGetProperty("error", out var error) ? error.GetString() : body);
        var series = root.GetProperty("data").GetProperty("result").EnumerateArray().Select(s => new Series(
            s.GetProperty("metric").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!),
            s.TryGetProperty("value", out var v) ? [Value(v)] : s.GetProperty("values").EnumerateArray().Select(Value).ToArray())).ToArray();
        return new QueryResult(series, null);
    }

    private static double Value(JsonElement pair) => double.Parse(pair[1].GetString()!, CultureInfo.InvariantCulture);

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}

/// <summary>One series of a query's result: its labels and its values (one for an instant query).</summary>
public sealed record Series(IReadOnlyDictionary<string, string> Labels, double[] Values);

/// <summary>A query's series, or the error Prometheus answered with.</summary>
public sealed record QueryResult(Series[] Series, string? Error);
