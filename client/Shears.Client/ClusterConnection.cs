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

    /// <summary>How long a client waits for a gateway to accept it before the command fails.</summary>
    public static TimeSpan ConnectTimeout { get; } = TimeSpan.FromSeconds(30);
    public IClusterClient Client => _host.Services.GetRequiredService<IClusterClient>();

    public static async Task<ClusterConnection> OpenAsync(ClusterTarget target, CancellationToken cancellationToken)
    {
        string? cluster = target.Address;
        var tls = target.TlsFiles();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        LogLevel? given = Environment.GetEnvironmentVariable("SHEARS_LOG") is { } level && Enum.TryParse<LogLevel>(level, true, out var l) ? l : null;
        builder.Logging.SetMinimumLevel(given ?? LogLevel.Error);
        if (cluster is null)
        {
            // A failed run's coordinator logs the exception with its stack; the embedded client prints the run's own
            // one-line error (and exits non-zero) instead. SHEARS_LOG=error (or lower) shows the stack too.
            if (given is null) builder.Logging.AddFilter("Shears.Grains.Runs.RunGrain", LogLevel.Critical);
            builder.UseOrleans(silo =>
            {
                silo.UseLocalhostClustering(FreePort(), FreePort(), serviceId: "shears", clusterId: "shears-embedded");
                silo.AddMemoryGrainStorage(ShearsStorage.Name);
                // Runs register a reminder; this silo is the whole cluster and lives only as long as its run, so Orleans'
                // in-memory reminder table is enough.
                silo.UseInMemoryReminderService();
                // The embedded silo's --memory-budget, from the environment (the default fraction of memory otherwise).
                long budget = Environment.GetEnvironmentVariable("SHEARS_MEMORY_BUDGET") is { Length: > 0 } text
                    ? Shears.Grains.Placement.ShardBudgets.Parse(text, "SHEARS_MEMORY_BUDGET") : 0;
                silo.AddShears(o => o.MemoryBudget = budget);
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
                if (tls is not null) client.UseShearsTls(tls);
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
                if (tls is not null) client.UseShearsTls(tls);
            });
        }
        var host = builder.Build();
        if (target.Embedded)
        {
            await host.StartAsync(cancellationToken);
            return new ClusterConnection(host, embedded: true);
        }
        // A gateway that never completes the connection (one that requires TLS, to a client without a certificate its CA
        // signed; one behind a filtering firewall) must not leave the command waiting: the connection is given ConnectTimeout.
        try { await host.StartAsync(cancellationToken).WaitAsync(ConnectTimeout, cancellationToken); }
        catch (TimeoutException)
        {
            _ = Task.Run(() => host.Dispose());
            throw new TimeoutException($"--cluster {cluster}: no gateway accepted this client within {ConnectTimeout.TotalSeconds:0} s" +
                (tls is null ? " (a cluster with mutual TLS needs --tls-cert, --tls-key and --tls-ca)" : " (with mutual TLS: is this client's certificate signed by the cluster's CA, and the gateways' by --tls-ca?)"));
        }
        return new ClusterConnection(host, embedded: false);
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
        ClientTimes.Mark(Embedded ? "silo-stopped" : "disconnected");
    }
}

/// <summary>
/// Where the client's commands go: <see cref="Address"/> (--cluster: gateways or redis://) or, when null, a silo in this
/// process; and the client's TLS files for a cluster with mutual TLS (--tls-cert/--tls-key/--tls-ca, else the
/// SHEARS_TLS_CERT/SHEARS_TLS_KEY/SHEARS_TLS_CA/SHEARS_TLS_PASSWORD environment variables).
/// </summary>
public sealed record ClusterTarget(string? Address, string? TlsCert = null, string? TlsKey = null, string? TlsCa = null)
{
    public bool Embedded => Address is null;

    /// <summary>A silo's HTTP port (http:// or https://), reached without an Orleans client.</summary>
    public bool Http => Address is { } a && (a.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || a.StartsWith("https://", StringComparison.OrdinalIgnoreCase));

    /// <summary>The TLS files as given: the options, else the SHEARS_TLS_* environment variables.</summary>
    public (string? Certificate, string? Key, string? Authority) TlsPaths() => (
        TlsCert ?? Environment.GetEnvironmentVariable("SHEARS_TLS_CERT"),
        TlsKey ?? Environment.GetEnvironmentVariable("SHEARS_TLS_KEY"),
        TlsCa ?? Environment.GetEnvironmentVariable("SHEARS_TLS_CA"));

    /// <summary>The TLS files, checked: all or none, and only with --cluster (the embedded silo has no connection to secure).</summary>
    public ShearsTlsFiles? TlsFiles()
    {
        if (Embedded)
        {
            if (TlsCert is not null || TlsKey is not null || TlsCa is not null)
                throw new ArgumentException($"{(TlsCert is not null ? "--tls-cert" : TlsKey is not null ? "--tls-key" : "--tls-ca")} needs --cluster: the silo in this process has no connection to secure");
            return null;
        }
        var (cert, key, ca) = TlsPaths();
        if (cert is null)
        {
            if (key is not null || ca is not null)
                throw new ArgumentException($"{(key is not null ? "--tls-key" : "--tls-ca")} needs --tls-cert: the cluster asks this client for its certificate");
            return null;
        }
        if (ca is null) throw new ArgumentException("--tls-cert needs --tls-ca: the certificate authority that signs the cluster's certificates");
        return new ShearsTlsFiles(Path.GetFullPath(cert), key is null ? null : Path.GetFullPath(key), Path.GetFullPath(ca), Environment.GetEnvironmentVariable("SHEARS_TLS_PASSWORD"));
    }
}
