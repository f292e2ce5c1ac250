using System.Text.Json;
using Shears.Pruning.Checkpoints;
using Shears.Testing;
using Xunit.Abstractions;

namespace Shears.Client.Tests;

/// <summary>
/// Silos, Redis and the client on separate hosts (network namespaces, <see cref="NetworkLab"/>), and faults of the
/// network rather than of processes: a worker's link cut for good, a link cut and restored after 10 s, Redis briefly
/// unreachable. Every run ends in the output of an undisturbed run, byte for byte.
/// </summary>
[Collection("redis")]
public class NetworkFaultTests(ITestOutputHelper log)
{
    [NetworkLabFact]
    public async Task RunsOutliveCutLinksAndAnUnreachableRedis()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 384, Layers: 6, Heads: 6, KvHeads: 2, IntermediateSize: 1024));
        string[] Run(string output) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "cubic", "--rounds", "24", "--shard-elements", "300000"];
        var calm = await ShearsProcess.RunAsync(Run("calm"));
        Assert.True(calm.ExitCode == 0, calm.ToString());

        await using var lab = await NetworkLab.CreateAsync();
        string redis = lab.Host("redis", 1);
        lab.Start("redis", "redis-server", ["--bind", redis, "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no"], out var redisLog);
        var silos = new Dictionary<string, (string Address, ProcessLog Log)>();
        foreach (var (name, octet) in new[] { ("a", 2), ("b", 3), ("c", 4) })
        {
            string address = lab.Host(name, octet);
            lab.Start(name, "dotnet", [SiloProcess.SiloDll, "--redis", $"{redis}:6379", "--advertise", address, "--silo-port", "11111", "--gateway-port", "30000",
                "--http-port", "8080", "--data-root", dir.Path], out var log);
            silos[name] = (address, log);
        }
        string Logs() => string.Concat(silos.Select(s => $"--- silo {s.Key}\n{s.Value.Log}")) + "--- redis\n" + redisLog;
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        foreach (var (name, (address, _)) in silos)
        {
            var up = DateTime.UtcNow.AddSeconds(90);
            while (true)
            {
                try { if (await http.GetStringAsync($"http://{address}:8080/healthz") == "ok") break; }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
                Assert.True(DateTime.UtcNow < up, $"silo {name} did not come up\n{Logs()}");
                await Task.Delay(500);
            }
        }
        string watcher = silos["a"].Address; // a's link is never cut: the test reads the runs' progress from it

        async Task Disturbed(string output, Func<Task> fault)
        {
            string runId = "net-" + output;
            var run = ShearsProcess.RunAsync(TimeSpan.FromMinutes(6), [.. Run(output), "--cluster", $"redis://{redis}:6379", "--run-id", runId]);
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (true)
            {
                Assert.False(run.IsCompleted, $"{output}: the run ended before round 3: {(run.IsCompleted ? run.Result.ToString() : "")}");
                Assert.True(DateTime.UtcNow < deadline, $"{output}: no round 3 within 3 minutes\n{Logs()}");
                try
                {
                    using var lines = JsonDocument.Parse(await http.GetStringAsync($"http://{watcher}:8080/api/runs"));
                    if (lines.RootElement.EnumerateArray().Any(l => l.GetProperty("runId").GetString() == runId && l.GetProperty("finishedRounds").GetInt32() >= 3)) break;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
                await Task.Delay(100);
            }
            var started = DateTime.UtcNow;
            await fault();
            var result = await run;
            log.WriteLine($"{output}: finished {(DateTime.UtcNow - started).TotalSeconds:F1} s after the fault");
            Assert.True(result.ExitCode == 0, $"{output}: {result}\n{Logs()}");
            foreach (string file in Directory.GetFiles(dir.Sub("calm")).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json"))
                Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub("calm"), file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub(output), file))), $"{output}: {file} differs");
        }

        // Redis unreachable for 5 s mid-run: membership and the runs' state wait for it.
        await Disturbed("redis-gap", async () => { lab.Cut("redis"); await Task.Delay(TimeSpan.FromSeconds(5)); lab.Restore("redis"); });
        // A worker's link cut and restored after 10 s (declared dead meanwhile, it leaves the cluster when it finds out).
        await Disturbed("b-gap", async () => { lab.Cut("b"); await Task.Delay(TimeSpan.FromSeconds(10)); lab.Restore("b"); });
        // A worker's link cut and never restored: its process lives on, unreachable.
        await Disturbed("c-cut", () => { lab.Cut("c"); return Task.CompletedTask; });
    }
}
