using System.Diagnostics;
using System.Net.Sockets;

namespace Shears.Client.Tests;

/// <summary>A real silo process (silo/ build output), started with its command line and killed at will.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ProcessLog _log;

    private SiloProcess(Process process, int httpPort, string siloPort, ProcessLog? log = null)
    {
        SiloPort = siloPort;
        _process = process;
        HttpPort = httpPort;
        _log = log ?? new ProcessLog(process);
    }

    public int HttpPort { get; }
    public string SiloPort { get; }
    public int Id => _process.Id;
    public string Log => _log.ToString();

    /// <summary>The silo host built beside this test project (dotnet test Cluster.sln builds both).</summary>
    public static string SiloDll
    {
        get
        {
            // tests/Shears.Client.Tests/bin/<Configuration>/net10.0/linux-x64/ → silo/Shears.Silo/bin/<Configuration>/net10.0/linux-x64/
            var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
            string configuration = output.Parent!.Parent!.Name;
            string repo = output.Parent!.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
            return Path.Combine(repo, "silo", "Shears.Silo", "bin", configuration, "net10.0", "linux-x64", "shears-silo.dll");
        }
    }

    private static readonly HashSet<int> s_handedOut = [];

    /// <summary>
    /// A port free now and never handed out before in this process. A port the kernel picks for a bind to port 0 is
    /// free only until the next such bind: a silo's --silo-port and its --http-port, both picked before the process
    /// starts, could otherwise be the same port. Ports come from 30100–32699: below the kernel's ephemeral range
    /// (32768–60999 by default), so no outgoing connection takes one between the pick and the silo's bind, and apart
    /// from the ranges Orleans' in-process test clusters allocate from in the other test assemblies (12000–21999 and
    /// 22300–29999, or 40000–49999 in older releases).
    /// </summary>
    public static int FreePort()
    {
        const int low = 30_100, high = 32_700;
        lock (s_handedOut)
        {
            for (int attempt = 0; attempt < 1000; attempt++)
            {
                int port = Random.Shared.Next(low, high);
                if (!s_handedOut.Add(port)) continue;
                try
                {
                    using var listener = new TcpListener(System.Net.IPAddress.Loopback, port);
                    listener.Start();
                    return port;
                }
                catch (SocketException) { }
            }
            throw new InvalidOperationException($"no free port found in {low}..{high - 1}");
        }
    }

    /// <summary>Starts a silo process without waiting for it: for silos expected to fail or never to join.</summary>
    public static SiloProcess Launch(params string[] args)
    {
        Assert.True(File.Exists(SiloDll), $"the silo host is not built at {SiloDll}");
        int http = FreePort();
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(SiloDll);
        foreach (string a in args) info.ArgumentList.Add(a);
        info.ArgumentList.Add("--http-port");
        info.ArgumentList.Add(http.ToString());
        info.ArgumentList.Add("--http-bind");
        info.ArgumentList.Add("127.0.0.1");
        int portAt = Array.IndexOf(args, "--silo-port");
        return new SiloProcess(Process.Start(info)!, http, portAt >= 0 ? args[portAt + 1] : "11111");
    }

    /// <summary>Whether this silo serves its HTTP port over HTTPS (--http-tls): its health is then asked over HTTPS.</summary>
    public bool Https { get; private init; }

    public static async Task<SiloProcess> StartAsync(params string[] args)
    {
        var launched = Launch(args);
        var silo = new SiloProcess(launched._process, launched.HttpPort, launched.SiloPort, launched._log) { Https = args.Contains("--http-tls") };
        // The silo's own certificate is checked by the tests that need it; here only "is it up".
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, _, _, _) => true };
        using var client = new HttpClient(handler);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            Assert.False(silo._process.HasExited, "silo exited:\n" + silo.Log);
            try
            {
                if ((await client.GetStringAsync($"{(silo.Https ? "https" : "http")}://127.0.0.1:{silo.HttpPort}/healthz")) == "ok") return silo;
            }
            catch (HttpRequestException) { }
            Assert.True(DateTime.UtcNow < deadline, "silo did not come up:\n" + silo.Log);
            await Task.Delay(250);
        }
    }

    public bool HasExited => _process.HasExited;

    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    public Task WaitForExitAsync(CancellationToken token) => _process.WaitForExitAsync(token);

    public async Task<string> MetricsAsync()
    {
        using var client = new HttpClient();
        return await client.GetStringAsync($"http://127.0.0.1:{HttpPort}/metrics");
    }

    public void Kill() => _process.Kill(entireProcessTree: true);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}

/// <summary>A test that needs a Redis server: SHEARS_TEST_REDIS=HOST:PORT (.ci/run starts one). Reported as skipped without it.</summary>
public sealed class RedisFactAttribute : FactAttribute
{
    public static string? Redis => Environment.GetEnvironmentVariable("SHEARS_TEST_REDIS");

    public RedisFactAttribute()
    {
        if (string.IsNullOrEmpty(Redis)) Skip = "needs a Redis server: set SHEARS_TEST_REDIS=HOST:PORT";
    }
}
