namespace Shears.Client.Tests;

/// <summary>
/// Silo processes forming one cluster: over Redis where the multi-process tests have one (SHEARS_TEST_REDIS), else
/// joined to the first silo's address with the runs' state in files.
/// </summary>
public sealed class SiloCluster : IAsyncDisposable
{
    private SiloCluster(List<SiloProcess> silos, string address) { Silos = silos; Address = address; }

    public IReadOnlyList<SiloProcess> Silos { get; }

    /// <summary>What the client's --cluster takes.</summary>
    public string Address { get; }

    public static async Task<SiloCluster> StartAsync(int count, string stateDir)
    {
        var silos = new List<SiloProcess>();
        try
        {
            if (RedisFactAttribute.Redis is { Length: > 0 })
            {
                string redis = MultiProcessTests.FreshRedisDatabase();
                for (int i = 0; i < count; i++)
                    silos.Add(await SiloProcess.StartAsync("--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString()));
                return new SiloCluster(silos, "redis://" + redis);
            }
            string primary = SiloProcess.FreePort().ToString();
            var gateways = new List<string>();
            for (int i = 0; i < count; i++)
            {
                string gateway = SiloProcess.FreePort().ToString();
                gateways.Add("127.0.0.1:" + gateway);
                silos.Add(await SiloProcess.StartAsync(["--silo-port", i == 0 ? primary : SiloProcess.FreePort().ToString(), "--gateway-port", gateway,
                    "--state-dir", stateDir, .. i == 0 ? Array.Empty<string>() : ["--primary", "127.0.0.1:" + primary]]));
            }
            return new SiloCluster(silos, string.Join(',', gateways));
        }
        catch
        {
            foreach (var silo in silos) await silo.DisposeAsync();
            throw;
        }
    }

    public string Logs => string.Concat(Silos.Select(s => s.Log));

    public async ValueTask DisposeAsync()
    {
        foreach (var silo in Silos) await silo.DisposeAsync();
    }
}
