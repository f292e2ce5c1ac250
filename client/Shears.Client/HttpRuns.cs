using System.Net;
using System.Net.Http.Json;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Orleans.Hosting;
using Shears.Contracts;

namespace Shears.Client;

/// <summary>
/// The commands' cluster over a silo's HTTP port (--cluster http://HOST:PORT or https://HOST:PORT of a silo started
/// with --http-runs): a run's spec is posted as JSON, its statuses read as JSON lines. No Orleans client starts, so a
/// command costs the HTTP requests and the run alone. Several silos may be named (comma-separated): a request that
/// cannot reach one goes to the next, so a follower whose silo was lost goes on through another (starting a run again
/// under its id is answered with the run already started). Over HTTPS the silos' certificates must chain to --tls-ca
/// (the machine's roots without it), and --tls-cert is this client's certificate, which starting and cancelling runs need.
/// </summary>
public sealed class HttpRuns : IRunsClient
{
    /// <summary>How long a request other than the status stream may take.</summary>
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);

    private readonly HttpClient _http;
    private readonly string _cluster;
    private readonly Uri[] _silos;
    // The silo the last request reached: the next one starts there.
    private volatile int _current;

    private HttpRuns(HttpClient http, string cluster, Uri[] silos)
    {
        _http = http;
        _cluster = cluster;
        _silos = silos;
    }

    public static IRunsClient Open(ClusterTarget target)
    {
        string cluster = target.Address!;
        var silos = new List<Uri>();
        foreach (string part in cluster.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(part, UriKind.Absolute, out var silo) || silo.Scheme is not ("http" or "https") || silo.Host.Length == 0
                || silo.AbsolutePath != "/" || silo.Query.Length > 0)
                throw new ArgumentException($"--cluster: '{part}' is not http://HOST:PORT or https://HOST:PORT");
            silos.Add(silo);
        }
        if (silos.Count == 0) throw new ArgumentException("--cluster names no silo");
        var uri = silos[0];
        if (silos.Any(s => s.Scheme != uri.Scheme))
            throw new ArgumentException($"--cluster {cluster}: every silo is reached the same way, all http:// or all https://");
        var handler = new SocketsHttpHandler { ConnectTimeout = RequestTimeout, PooledConnectionLifetime = Timeout.InfiniteTimeSpan };
        // Over HTTPS --tls-ca alone is enough to read (status, list, watch, report); starting and cancelling runs need
        // this client's certificate too.
        // The SHEARS_TLS_* variables are defaults for clusters with TLS; a plain http:// silo does without them, but TLS
        // options given on the command line with one are a mistake.
        if (uri.Scheme != "https")
        {
            if (target.TlsCert is not null || target.TlsCa is not null || target.TlsKey is not null)
                throw new ArgumentException($"{(target.TlsCert is not null ? "--tls-cert" : target.TlsCa is not null ? "--tls-ca" : "--tls-key")} needs an https:// --cluster: {cluster} is plain HTTP");
        }
        else if (target.TlsPaths() is var (cert, key, ca) && (cert is not null || ca is not null || key is not null))
        {
            X509Certificate2Collection authorities;
            if (cert is not null)
            {
                var (certificate, trusted) = ShearsTls.Load(target.TlsFiles()!, silo: false);
                handler.SslOptions.ClientCertificates = new X509CertificateCollection { certificate };
                authorities = trusted;
            }
            else if (ca is not null) authorities = ShearsTls.LoadAuthorities(Path.GetFullPath(ca));
            else throw new ArgumentException("--tls-key needs --tls-cert: the certificate whose key it is");
            // The cluster's CA decides, as for gateways: the machine's roots and host names are not consulted.
            handler.SslOptions.RemoteCertificateValidationCallback = (_, remote, _, _) =>
                remote is not null && ShearsTls.Trusted(remote as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(remote.GetRawCertData()), authorities, remoteIsServer: true);
        }
        var http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        var runs = new HttpRuns(http, cluster, silos.ToArray());
        // The connection (and the HTTP code's first run) is made on another thread while this one serializes the first
        // request: the first request then goes out on the open connection. Its outcome is the first request's to tell.
        runs._warm = Task.Run(async () =>
        {
            try { using var _ = await http.GetAsync(new Uri(uri, "healthz"), HttpCompletionOption.ResponseHeadersRead); }
            catch (Exception) { }
        });
        return runs;
    }

    private Task _warm = Task.CompletedTask;

    private static string RunPath(string runId, string? tail = null) => $"api/runs/{Uri.EscapeDataString(runId)}{(tail is null ? "" : "/" + tail)}";

    /// <summary>
    /// Sends a request to the silo the last one reached, else to the next that can be reached; a cluster none of whose
    /// silos can be reached is a <see cref="ClusterUnavailableException"/>.
    /// </summary>
    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, Func<HttpContent>? content, HttpCompletionOption completion, CancellationToken token)
    {
        int first = _current;
        for (int attempt = 0; ; attempt++)
        {
            int index = (first + attempt) % _silos.Length;
            using var request = new HttpRequestMessage(method, new Uri(_silos[index], path)) { Content = content?.Invoke() };
            try
            {
                var response = await _http.SendAsync(request, completion, token);
                _current = index;
                return response;
            }
            catch (Exception e) when (e is HttpRequestException || (e is TaskCanceledException && (!token.IsCancellationRequested || e.InnerException is TimeoutException)))
            {
                if (attempt + 1 < _silos.Length) continue;
                throw new ClusterUnavailableException(e is HttpRequestException
                    ? $"--cluster {_cluster}: {e.Message}"
                    : $"--cluster {_cluster}: no answer within {RequestTimeout.TotalSeconds:0} s", e);
            }
        }
    }

    private async Task<HttpResponseMessage> RequestAsync(HttpMethod method, string path, Func<HttpContent>? content = null)
    {
        using var timeout = new CancellationTokenSource(RequestTimeout);
        return await SendAsync(method, path, content, HttpCompletionOption.ResponseContentRead, timeout.Token);
    }

    /// <summary>The silo's {"error": …} for a refused request, else the status line.</summary>
    private static async Task<string> ErrorOf(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        try
        {
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind == JsonValueKind.Object && document.RootElement.TryGetProperty("error", out var error))
                return error.GetString() ?? body;
        }
        catch (JsonException) { }
        return $"HTTP {(int)response.StatusCode} {response.ReasonPhrase}{(body.Length > 0 ? ": " + body : "")}";
    }

    private async Task<T> Read<T>(HttpResponseMessage response, string what)
    {
        try { return await response.Content.ReadFromJsonAsync<T>(RunJson.Options) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new ClusterUnavailableException($"--cluster {_cluster}: {what} is not what a Shears silo sends ({e.Message})", e); }
    }

    private async Task<Exception> Unexpected(HttpResponseMessage response) =>
        new ClusterUnavailableException($"--cluster {_cluster}: {await ErrorOf(response)}");

    public async Task<RunStatus> StartAsync(string runId, RunSpec spec)
    {
        using var response = await RequestAsync(HttpMethod.Post, RunPath(runId), () => JsonContent.Create(spec, options: RunJson.Options));
        switch (response.StatusCode)
        {
            case HttpStatusCode.OK: return await Read<RunStatus>(response, "the answer to the run's start");
            case HttpStatusCode.BadRequest or HttpStatusCode.Forbidden: throw new RunRejectedException(await ErrorOf(response));
            // Without --http-runs only the read-only routes exist: a POST finds none.
            case HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed:
                throw new ClusterUnavailableException($"--cluster {_cluster}: this silo takes no runs over HTTP (start it with --http-runs)");
            default: throw await Unexpected(response);
        }
    }

    public async Task<RunStatus> GetStatusAsync(string runId)
    {
        using var response = await RequestAsync(HttpMethod.Get, RunPath(runId));
        if (response.StatusCode == HttpStatusCode.NotFound) return new RunStatus { RunId = runId };
        if (!response.IsSuccessStatusCode) throw await Unexpected(response);
        return (await Read<RunPageStatus>(response, "the run's status")).Status;
    }

    /// <summary>The part of the run page's JSON (/api/runs/RUN) a client reads.</summary>
    private sealed record RunPageStatus(RunStatus Status);

    public async IAsyncEnumerable<RunStatus> WatchAsync(string runId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var response = await SendAsync(HttpMethod.Get, RunPath(runId, "statuses"), null, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        int silo = _current;
        bool ended = false;
        try
        {
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                ended = true;
                yield return new RunStatus { RunId = runId };
                yield break;
            }
            if (!response.IsSuccessStatusCode) throw await Unexpected(response);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
            while (await reader.ReadLineAsync(cancellationToken) is { } line)
            {
                if (line.Length == 0) continue;
                var status = JsonSerializer.Deserialize<RunStatus>(line, RunJson.Options)
                    ?? throw new JsonException($"--cluster {_cluster}: a null status in the run's stream");
                if (status.IsFinished) ended = true;
                yield return status;
                if (status.IsFinished) yield break;
            }
            // The silo ended the response before the run finished (its coordinator was lost): a broken stream.
            throw new IOException($"--cluster {_cluster}: the status stream of run {runId} ended before the run did");
        }
        finally
        {
            // A stream that broke or fell silent: the next subscription asks the next silo first (a silo that went
            // silent without closing its connections would otherwise hold every subscription until the silence ends).
            if (!ended && _silos.Length > 1 && _current == silo) _current = (silo + 1) % _silos.Length;
        }
    }

    public async Task<RunStatus> CancelAsync(string runId)
    {
        using var response = await RequestAsync(HttpMethod.Post, RunPath(runId, "cancel"));
        if (response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Forbidden) throw new RunRejectedException(await ErrorOf(response));
        if (response.StatusCode == HttpStatusCode.MethodNotAllowed)
            throw new ClusterUnavailableException($"--cluster {_cluster}: this silo takes no runs over HTTP (start it with --http-runs)");
        if (!response.IsSuccessStatusCode) throw await Unexpected(response);
        return await Read<RunStatus>(response, "the answer to the cancel");
    }

    public async Task<string?> GetReportJsonAsync(string runId)
    {
        using var response = await RequestAsync(HttpMethod.Get, $"runs/{Uri.EscapeDataString(runId)}/report");
        if (response.StatusCode == HttpStatusCode.NotFound) return null;
        if (!response.IsSuccessStatusCode) throw await Unexpected(response);
        return await response.Content.ReadAsStringAsync();
    }

    /// <summary>The part of a line of the runs list's JSON (/api/runs) `shears list` prints.</summary>
    private sealed record RunLine(string RunId, string State, string Phase, string? Model);

    public async Task<IReadOnlyList<RunListing>> ListAsync()
    {
        using var response = await RequestAsync(HttpMethod.Get, "api/runs");
        if (!response.IsSuccessStatusCode) throw await Unexpected(response);
        return (await Read<RunLine[]>(response, "the runs list")).Select(l => new RunListing(l.RunId, l.State, l.Phase, l.Model)).ToArray();
    }

    public bool IsBrokenStream(Exception e) => e is ClusterUnavailableException or HttpRequestException or IOException or OperationCanceledException;

    public bool IsClusterError(Exception e) => e is ClusterUnavailableException or HttpRequestException;

    public async ValueTask DisposeAsync()
    {
        await _warm;
        _http.Dispose();
    }
}
