using System.Globalization;
using System.Net;
using Orleans.Configuration;
using Orleans.Dashboard;
using Orleans.Hosting;
using OpenTelemetry.Metrics;
using Shears.Grains;
using Shears.Grains.Diagnostics;
using Shears.Silo;
using Shears.Silo.Pages;

// Output and parsing never depend on the machine's locale.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.DefaultThreadCurrentUICulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = CultureInfo.InvariantCulture;

// Options come from the command line (--redis HOST:PORT, --silo-port N, ...), the environment
// (SHEARS_ prefix, e.g. SHEARS_REDIS) or appsettings.json.
var builder = WebApplication.CreateBuilder(new[] { "--orleans-dashboard", "--http-tls", "--http-runs" }.Aggregate(SiloSettings.IndexRepeated(args, "--data-root"), SiloSettings.Switch));
builder.Configuration.AddEnvironmentVariables("SHEARS_");
SiloSettings settings;
try
{
    settings = SiloSettings.From(builder.Configuration);
    // The TLS files are read now, so that a missing file or key fails here with its name rather than inside Orleans' start.
    if (settings.Tls is { } files) ShearsTls.Load(files, silo: true);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"shears-silo: {e.Message}");
    return 2;
}

builder.WebHost.UseUrls($"{(settings.HttpTls ? "https" : "http")}://{settings.HttpAddress}:{settings.HttpPort}");
if (settings.HttpTls)
{
    // The HTTP port (metrics, health, runs page) over HTTPS with the silo's own certificate; browsers and scrapers are
    // not asked for one.
    var (certificate, authorities) = ShearsTls.Load(settings.Tls!, silo: true);
    builder.WebHost.ConfigureKestrel(k => k.ConfigureHttpsDefaults(h =>
    {
        h.ServerCertificate = certificate;
        // With --http-runs a client may present its certificate; only one the cluster's CA signed is accepted, and only a
        // connection with one may start or cancel runs (RunsApi). Without it nobody is asked.
        if (settings.HttpRuns)
        {
            h.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate;
            h.ClientCertificateValidation = (remote, _, _) => ShearsTls.Trusted(remote, authorities, remoteIsServer: false);
        }
    }));
}
builder.UseOrleans(silo =>
{
    // Mutual TLS on every silo and gateway connection: only certificates the cluster's CA signed get in.
    if (settings.Tls is { } tls) silo.UseShearsTls(tls);
    if (settings.Redis is { } redis)
    {
        silo.UseRedisClustering(redis);
        silo.AddRedisGrainStorage(ShearsStorage.Name, o => o.ConfigurationOptions = StackExchange.Redis.ConfigurationOptions.Parse(redis));
        // The reminders that resume a run whose coordinator's silo was lost live beside its state, outside every silo.
        silo.UseRedisReminderService(o => o.ConfigurationOptions = StackExchange.Redis.ConfigurationOptions.Parse(redis));
    }
    else
    {
        silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort, settings.Primary);
        silo.AddShearsFileStorage(settings.StateDirectory);
        silo.AddShearsFileReminders(settings.StateDirectory);
    }
    silo.Configure<ClusterOptions>(o => { o.ClusterId = "shears"; o.ServiceId = "shears"; });
    // Declare a silo that stops answering dead within a few seconds, so runs resume quickly.
    silo.Configure<ClusterMembershipOptions>(o =>
    {
        o.ProbeTimeout = TimeSpan.FromSeconds(2);
        o.NumMissedProbesLimit = 2;
        o.NumVotesForDeathDeclaration = 1;
        o.TableRefreshTimeout = TimeSpan.FromSeconds(2);
    });
    silo.Configure<EndpointOptions>(o =>
    {
        o.SiloPort = settings.SiloPort;
        o.GatewayPort = settings.GatewayPort;
        o.AdvertisedIPAddress = settings.Advertise;
        o.SiloListeningEndpoint = new IPEndPoint(IPAddress.Any, settings.SiloPort);
        o.GatewayListeningEndpoint = new IPEndPoint(IPAddress.Any, settings.GatewayPort);
    });
    // Orleans' own dashboard (grains, calls, silos), under /orleans-dashboard: / is Shears' runs page.
    if (settings.OrleansDashboard) silo.AddDashboard();
    silo.AddShears(o =>
    {
        o.Device = settings.Device;
        o.Role = settings.Role;
        o.DataRoots = settings.DataRoots.ToList();
        o.MemoryBudget = settings.MemoryBudget;
    });
});
builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
    .AddMeter(ShearsMetrics.MeterName)
    .AddMeter("Microsoft.Orleans")
    .AddPrometheusExporter());

var app = builder.Build();
app.MapPrometheusScrapingEndpoint("/metrics");
app.MapGet("/healthz", () => Results.Text("ok"));
app.MapRunsPages();
if (settings.HttpRuns) app.MapRunsApi(requireCertificate: settings.HttpTls);
if (settings.OrleansDashboard) app.MapOrleansDashboard("/orleans-dashboard");
app.Run();
return 0;
