using Shears.Testing;

namespace Shears.Client.Tests.Monitoring;

/// <summary>Orleans' own dashboard, behind the silo's --orleans-dashboard, beside the runs page.</summary>
public class OrleansDashboardTests
{
    [Fact]
    public async Task TheSwitchServesOrleansDashboardUnderItsPathAndKeepsTheRunsPage()
    {
        using var dir = new TempDir();
        await using var silo = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
            "--state-dir", dir.Sub("state"), "--orleans-dashboard");
        using var http = new HttpClient();
        string site = $"http://127.0.0.1:{silo.HttpPort}";
        Assert.Contains("<title>Orleans Dashboard</title>", await http.GetStringAsync($"{site}/orleans-dashboard/"));
        Assert.Contains("<title>Shears runs</title>", await http.GetStringAsync($"{site}/"));
        Assert.Equal("[]", await http.GetStringAsync($"{site}/api/runs"));
    }

    [Fact]
    public async Task WithoutTheSwitchThereIsNoOrleansDashboard()
    {
        using var dir = new TempDir();
        await using var silo = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
            "--state-dir", dir.Sub("state"));
        using var http = new HttpClient();
        using var response = await http.GetAsync($"http://127.0.0.1:{silo.HttpPort}/orleans-dashboard/");
        Assert.Equal(System.Net.HttpStatusCode.NotFound, response.StatusCode);
    }
}
