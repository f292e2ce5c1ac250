using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Shears.Grains;

namespace Shears.Client;

/// <summary>A client of a Shears cluster: either a silo hosted in this process (the embedded default) or a remote cluster's gateways.</summary>
public sealed class ClusterConnection : IAsyncDisposable
{
    private readonly IHost _host;

    private ClusterConnection(IHost host, bool embedded)
    {
        _host = host;
        Embedded = embedded;
    }

    public bool Embedded { get; }
    public IClusterClient Client => _host.Services.GetRequiredService<IClusterClient>();

    public static async Task<ClusterConnection> OpenAsync(string? cluster, CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.SetMinimumLevel(Environment.GetEnvironmentVariable("SHEARS_LOG") is { } level && Enum.TryParse<LogLevel>(level, true, out var l) ? l : LogLevel.Error);
        if (cluster is null)
        {
            builder.UseOrleans(silo =>
            {
                silo.UseLocalhostClustering(FreePort(), FreePort(), serviceId: "shears", clusterId: "shears-embedded");
                silo.AddMemoryGrainStorage(ShearsStorage.Name);
                // Runs register a reminder; this silo is the whole cluster and lives only as long as its run, so Orleans'
                // in-memory reminder table is enough.
                silo.UseInMemoryReminderService();
                silo.AddShears();
            });
        }
        else if (cluster.StartsWith("redis://", StringComparison.Ordinal))
        {
            string redis = cluster["redis://".Length..];
            if (redis.Length == 0) throw new ArgumentException("--cluster redis:// names no Redis server (redis://HOST:PORT)");
            builder.UseOrleansClient(client =>
            {
                client.Configure<ClientMessagingOptions>(o => o.MaxMessageBodySize = Orleans.Hosting.ShearsHostingExtensions.MaxMessageBytes);
                client.UseRedisClustering(redis);
                client.Configure<ClusterOptions>(o => { o.ClusterId = "shears"; o.ServiceId = "shears"; });
            });
        }
        else
        {
            var endpoints = ParseGateways(cluster);
            builder.UseOrleansClient(client =>
            {
                client.Configure<ClientMessagingOptions>(o => o.MaxMessageBodySize = Orleans.Hosting.ShearsHostingExtensions.MaxMessageBytes);
                client.UseStaticClustering(endpoints);
                client.Configure<ClusterOptions>(o => { o.ClusterId = "shears"; o.ServiceId = "shears"; });
            });
        }
        var host = builder.Build();
        await host.StartAsync(cancellationToken);
        return new ClusterConnection(host, cluster is null);
    }

    public static IPEndPoint[] ParseGateways(string cluster)
    {
        var result = new List<IPEndPoint>();
        foreach (string part in cluster.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int colon = part.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(part[(colon + 1)..], out int port) || port is <= 0 or > 65535)
                throw new ArgumentException($"--cluster: '{part}' is not HOST:PORT");
            string host = part[..colon];
            var address = IPAddress.TryParse(host, out var ip) ? ip
                : Dns.GetHostAddresses(host).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
                  ?? throw new ArgumentException($"--cluster: cannot resolve host '{host}'");
            result.Add(new IPEndPoint(address, port));
        }
        if (result.Count == 0) throw new ArgumentException("--cluster names no gateway");
        return result.ToArray();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        try { await _host.StopAsync(TimeSpan.FromSeconds(10)); }
        finally { _host.Dispose(); }
    }
}
