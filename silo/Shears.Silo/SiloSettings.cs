using System.Net;
using System.Net.Sockets;
using Orleans.Hosting;

namespace Shears.Silo;

/// <summary>The silo's command-line options, read from configuration, each checked with a message naming it.</summary>
public sealed record SiloSettings(
    string? Redis, int SiloPort, int GatewayPort, IPEndPoint? Primary, IPAddress Advertise, string HttpAddress, int HttpPort,
    string Device, string Role, IReadOnlyList<string> DataRoots, string StateDirectory, bool OrleansDashboard = false,
    ShearsTlsFiles? Tls = null, bool HttpTls = false, long MemoryBudget = 0, bool HttpRuns = false)
{
    public static SiloSettings From(IConfiguration configuration)
    {
        string? redis = configuration["redis"];
        if (redis is not null && redis.StartsWith("redis://", StringComparison.Ordinal)) redis = redis["redis://".Length..];
        int siloPort = Port(configuration, "silo-port", 11111);
        int gatewayPort = Port(configuration, "gateway-port", 30000);
        int httpPort = Port(configuration, "http-port", 8080);
        IPEndPoint? primary = configuration["primary"] is { } p ? Endpoint("--primary", p) : null;
        var advertise = configuration["advertise"] is { } a ? Address("--advertise", a) : IPAddress.Loopback;
        string role = configuration["role"] ?? "all";
        if (role is not ("all" or "worker" or "coordinator"))
            throw new ArgumentException($"--role must be worker, coordinator or all, got '{role}'");
        var roots = configuration.GetSection("data-root").GetChildren().Select(c => c.Value).OfType<string>().ToArray();
        if (roots.Length == 0 && configuration["data-root"] is { } single) roots = single.Split(',', StringSplitOptions.RemoveEmptyEntries);
        // Without Redis the runs' state is kept in files: every silo of the cluster must name the same folder.
        string state = configuration["state-dir"] is { Length: > 0 } dir ? dir : DefaultStateDirectory;
        var tls = TlsFiles(configuration);
        bool httpTls = Flag(configuration, "http-tls");
        if (httpTls && tls is null) throw new ArgumentException("--http-tls serves the HTTP port with the silo's certificate: give --tls-cert and --tls-ca");
        // --http-bind names the address; --http-address is its earlier name, still read.
        string httpBind = configuration["http-bind"] ?? configuration["http-address"] ?? "0.0.0.0";
        if (!IPAddress.TryParse(httpBind, out _) && httpBind != "localhost")
            throw new ArgumentException($"--http-bind must be an IP address (or localhost), got '{httpBind}'");
        // Runs submitted over HTTP read and write files on this machine: only from this machine (a loopback --http-bind),
        // or over HTTPS from clients whose certificates the cluster's CA signed.
        bool httpRuns = Flag(configuration, "http-runs");
        if (httpRuns && !httpTls && !(httpBind == "localhost" || IPAddress.IsLoopback(IPAddress.Parse(httpBind))))
            throw new ArgumentException($"--http-runs on --http-bind {httpBind} would let anyone who reaches the port start runs: give --http-tls (clients then need a certificate the cluster's CA signed) or bind the HTTP port to 127.0.0.1");
        return new SiloSettings(redis, siloPort, gatewayPort, primary, advertise, httpBind, httpPort,
            configuration["device"] ?? "auto", role, roots.Select(Path.GetFullPath).ToArray(), Path.GetFullPath(state), Flag(configuration, "orleans-dashboard"),
            tls, httpTls, configuration["memory-budget"] is { } budget ? Budget(budget) : 0, httpRuns);
    }

    /// <summary>--memory-budget (<see cref="Shears.Grains.Placement.ShardBudgets.Parse"/>).</summary>
    public static long Budget(string text) => Shears.Grains.Placement.ShardBudgets.Parse(text, "--memory-budget");

    /// <summary>--tls-cert FILE [--tls-key FILE] --tls-ca FILE [--tls-password P]: all or none (mutual TLS needs both sides' files).</summary>
    public static ShearsTlsFiles? TlsFiles(IConfiguration configuration)
    {
        string? cert = configuration["tls-cert"], key = configuration["tls-key"], ca = configuration["tls-ca"], password = configuration["tls-password"];
        if (cert is null)
        {
            if (key is not null || ca is not null)
                throw new ArgumentException($"{(key is not null ? "--tls-key" : "--tls-ca")} needs --tls-cert: mutual TLS needs this silo's certificate");
            return null;
        }
        if (ca is null) throw new ArgumentException("--tls-cert needs --tls-ca: the certificate authority that signs the cluster's certificates");
        return new ShearsTlsFiles(Path.GetFullPath(cert), key is null ? null : Path.GetFullPath(key), Path.GetFullPath(ca), password);
    }

    /// <summary>Where silos clustered without Redis keep the runs' state unless --state-dir says otherwise.</summary>
    public static string DefaultStateDirectory =>
        Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify), "shears", "state");

    /// <summary>Turns a repeated "--name value" into "--name:0 value --name:1 value" so configuration keeps every value.</summary>
    public static string[] IndexRepeated(string[] args, string name)
    {
        var result = new List<string>();
        int index = 0;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == name && i + 1 < args.Length) { result.Add($"{name}:{index++}"); result.Add(args[++i]); }
            else if (args[i].StartsWith(name + "=", StringComparison.Ordinal)) result.Add($"{name}:{index++}={args[i][(name.Length + 1)..]}");
            else result.Add(args[i]);
        }
        return result.ToArray();
    }

    /// <summary>Turns a bare switch ("--name" followed by another option or nothing) into "--name=true", as configuration reads it.</summary>
    public static string[] Switch(string[] args, string name) =>
        args.Select((a, i) => a == name && (i + 1 == args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)) ? name + "=true" : a).ToArray();

    /// <summary>A switch: "--name=true|false", or "--name true|false".</summary>
    private static bool Flag(IConfiguration configuration, string name)
    {
        string? text = configuration[name];
        if (text is null) return false;
        if (text.Length == 0) return true;
        return bool.TryParse(text, out bool value) ? value : throw new ArgumentException($"--{name} takes true or false, got '{text}'");
    }

    private static int Port(IConfiguration configuration, string name, int fallback)
    {
        string? text = configuration[name];
        if (text is null) return fallback;
        if (!int.TryParse(text, out int port) || port is < 0 or > 65535)
            throw new ArgumentException($"--{name} must be a port number, got '{text}'");
        return port;
    }

    private static IPAddress Address(string option, string text) =>
        IPAddress.TryParse(text, out var ip) ? ip
        : Dns.GetHostAddresses(text).FirstOrDefault(x => x.AddressFamily == AddressFamily.InterNetwork)
          ?? throw new ArgumentException($"{option}: cannot resolve '{text}'");

    private static IPEndPoint Endpoint(string option, string text)
    {
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text[(colon + 1)..], out int port))
            throw new ArgumentException($"{option} must be HOST:PORT, got '{text}'");
        return new IPEndPoint(Address(option, text[..colon]), port);
    }
}
