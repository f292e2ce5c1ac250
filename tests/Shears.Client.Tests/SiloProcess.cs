using System.Diagnostics;
using System.Net.Sockets;

namespace Shears.Client.Tests;

/// <summary>A real silo process (silo/ build output), started with its command line and killed at will.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ProcessLog _log;

    private SiloProcess(Process process, int httpPort, string siloPort)
    {
        SiloPort = siloPort;
        _process = process;
        HttpPort = httpPort;
        _log = new ProcessLog(process);
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

    public static int FreePort()
    {
        using var listener = new TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    public static async Task<SiloProcess> StartAsync(params string[] args)
    {
        Assert.True(File.Exists(SiloDll), $"the silo host is not built at {SiloDll}");
        int http = FreePort();
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(SiloDll);
        foreach (string a in args) info.ArgumentList.Add(a);
        info.ArgumentList.Add("--http-port");
        info.ArgumentList.Add(http.ToString());
        info.ArgumentList.Add("--http-address");
        info.ArgumentList.Add("127.0.0.1");
        int portAt = Array.IndexOf(args, "--silo-port");
        var silo = new SiloProcess(Process.Start(info)!, http, portAt >= 0 ? args[portAt + 1] : "11111");
        using var client = new HttpClient();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            Assert.False(silo._process.HasExited, "silo exited:\n" + silo.Log);
            try
            {
                if ((await client.GetStringAsync($"http://127.0.0.1:{http}/healthz")) == "ok") return silo;
            }
            catch (HttpRequestException) { }
            Assert.True(DateTime.UtcNow < deadline, "silo did not come up:\n" + silo.Log);
            await Task.Delay(250);
        }
    }

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
