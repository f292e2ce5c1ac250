using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;

// Usage: orleans-floor client PORT   (connect to the gateway at 127.0.0.1:PORT, call the management grain, disconnect)
//        orleans-floor silo          (start a silo in this process, call a grain of its own, stop it)
// Prints when each step ended, in seconds since the process started, as shears does with SHEARS_TIMES=1.
var processStart = Process.GetCurrentProcess().StartTime.ToUniversalTime();
void Mark(string step) => Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"floor-times: {(DateTime.UtcNow - processStart).TotalSeconds:0.000} s {step}"));
Mark("main");
if (args.Length == 0 || args[0] is not ("client" or "silo"))
{
    Console.Error.WriteLine("usage: orleans-floor client PORT | orleans-floor silo");
    return 2;
}
bool silo = args[0] == "silo";
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
if (silo)
{
    builder.UseOrleans(s => s.UseLocalhostClustering(FreePort(), FreePort(), serviceId: "floor", clusterId: "floor"));
}
else
{
    if (args.Length < 2 || !int.TryParse(args[1], out int port)) { Console.Error.WriteLine("orleans-floor client: PORT is missing"); return 2; }
    builder.UseOrleansClient(c =>
    {
        c.UseStaticClustering(new IPEndPoint(IPAddress.Loopback, port));
        c.Configure<ClusterOptions>(o => { o.ClusterId = "shears"; o.ServiceId = "shears"; });
    });
}
using var host = builder.Build();
await host.StartAsync();
Mark(silo ? "silo-started" : "connected");
var hosts = await host.Services.GetRequiredService<IClusterClient>().GetGrain<IManagementGrain>(0).GetHosts();
Mark(hosts.Count == 1 ? "called" : "called-wrong-cluster");
await host.StopAsync(TimeSpan.FromSeconds(10));
Mark(silo ? "silo-stopped" : "disconnected");
return 0;

static int FreePort()
{
    using var listener = new TcpListener(IPAddress.Loopback, 0);
    listener.Start();
    return ((IPEndPoint)listener.LocalEndpoint).Port;
}
