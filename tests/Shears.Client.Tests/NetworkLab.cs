using System.Diagnostics;

namespace Shears.Client.Tests;

/// <summary>
/// Hosts on one machine: network namespaces, each with its own address on a private /24, joined by veth pairs to a
/// bridge that also gives this (the test's) namespace an address, so the test reaches every host as another host
/// would. Links can be cut and restored while the processes behind them keep running. Everything is removed on
/// dispose, also after a failure; nothing is routed off the machine.
/// </summary>
public sealed class NetworkLab : IAsyncDisposable
{
    private readonly string _id = Guid.NewGuid().ToString("N")[..6];
    private readonly int _subnet = Random.Shared.Next(1, 250);
    private readonly List<string> _hosts = [];
    private readonly List<Process> _processes = [];

    private string Bridge => "shb" + _id;
    public string Gateway => $"10.213.{_subnet}.254";

    public static bool Available()
    {
        if (Environment.UserName != "root" || !File.Exists("/usr/sbin/ip") && !File.Exists("/sbin/ip")) return false;
        string probe = "shears-probe-" + Environment.ProcessId;
        try { Ip($"netns add {probe}"); Ip($"netns del {probe}"); return true; }
        catch (InvalidOperationException) { return false; }
    }

    public static async Task<NetworkLab> CreateAsync()
    {
        var lab = new NetworkLab();
        Ip($"link add {lab.Bridge} type bridge");
        Ip($"addr add {lab.Gateway}/24 dev {lab.Bridge}");
        Ip($"link set {lab.Bridge} up");
        await Task.CompletedTask;
        return lab;
    }

    /// <summary>A new host (namespace) with the given last octet; returns its address.</summary>
    private string AddHost(string name, int octet)
    {
        string ns = Namespace(name), inside = "shv" + _id + octet, outside = "shp" + _id + octet;
        Ip($"netns add {ns}");
        _hosts.Add(ns);
        Ip($"link add {inside} type veth peer name {outside}");
        Ip($"link set {inside} netns {ns}");
        Ip($"link set {outside} master {Bridge}");
        Ip($"link set {outside} up");
        Ip($"-n {ns} addr add 10.213.{_subnet}.{octet}/24 dev {inside}");
        Ip($"-n {ns} link set {inside} up");
        Ip($"-n {ns} link set lo up");
        return $"10.213.{_subnet}.{octet}";
    }

    private string Namespace(string name) => $"shears-{_id}-{name}";

    private string Port(string name) => "shp" + _id + _hostOctets[name];
    private readonly Dictionary<string, int> _hostOctets = [];

    public string Host(string name, int octet)
    {
        _hostOctets[name] = octet;
        return AddHost(name, octet);
    }

    /// <summary>Cuts the host's link at the bridge: its processes live on, unreachable, and reach nothing.</summary>
    public void Cut(string name) => Ip($"link set {Port(name)} down");

    public void Restore(string name) => Ip($"link set {Port(name)} up");

    /// <summary>Starts <paramref name="file"/> with <paramref name="args"/> inside the host's namespace.</summary>
    public Process Start(string name, string file, IEnumerable<string> args, out ProcessLog log)
    {
        var info = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "netns", "exec", Namespace(name), file }.Concat(args)) info.ArgumentList.Add(a);
        var process = Process.Start(info)!;
        _processes.Add(process);
        log = new ProcessLog(process);
        return process;
    }

    private static void Ip(string args)
    {
        var info = new ProcessStartInfo("ip") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string a in args.Split(' ')) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"ip {args}: {error.Trim()}");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var process in _processes)
        {
            try
            {
                if (!process.HasExited) { process.Kill(entireProcessTree: true); await process.WaitForExitAsync(); }
            }
            catch (InvalidOperationException) { }
            process.Dispose();
        }
        foreach (string ns in _hosts) { try { Ip($"netns del {ns}"); } catch (InvalidOperationException) { } }
        try { Ip($"link del {Bridge}"); } catch (InvalidOperationException) { }
    }
}

/// <summary>A test that builds network namespaces: needs root and iproute2 (.ci/run runs as root). Skipped, saying so, elsewhere.</summary>
public sealed class NetworkLabFactAttribute : FactAttribute
{
    public NetworkLabFactAttribute()
    {
        if (!NetworkLab.Available()) Skip = "needs root and iproute2 to create network namespaces";
    }
}
