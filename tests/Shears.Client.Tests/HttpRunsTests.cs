using System.Net;
using System.Text.Json;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>`shears … --cluster http(s)://HOST:PORT`: runs submitted to a silo's HTTP port (--http-runs), with no Orleans client.</summary>
public class HttpRunsTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    private static bool Empty(string dir) => !Directory.Exists(dir) || !Directory.EnumerateFileSystemEntries(dir).Any();

    [Fact]
    public async Task ARunSubmittedOverHttpIsTheEmbeddedRunAndEveryCommandFollowsIt()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Run(string output) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.37", "--shard-elements", "300"];
        var embedded = await ShearsProcess.RunAsync(Run("embedded"));
        Assert.True(embedded.ExitCode == 0, embedded.ToString());

        var silo = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
            "--state-dir", dir.Sub("state"), "--http-runs");
        await using (silo)
        {
            string cluster = $"http://127.0.0.1:{silo.HttpPort}";
            var run = await ShearsProcess.RunAsync(Limit, [.. Run("over-http"), "--cluster", cluster, "--run-id", "over-http"]);
            Assert.True(run.ExitCode == 0, run + "\n" + silo.Log);
            Assert.Contains("round 1/1", run.Stdout);
            Assert.Contains("wrote " + dir.Sub("over-http"), run.Stdout);
            Outputs.AssertSameFiles(dir.Sub("embedded"), dir.Sub("over-http"));
            var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
            ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("over-http"), ReferencePruner.Masks(manifest, 0.37, global: true));

            var list = await ShearsProcess.RunAsync(Limit, "list", "--cluster", cluster);
            Assert.True(list.ExitCode == 0, list.ToString());
            Assert.Contains($"over-http\tcompleted\tcompleted\t{dir.Sub("in")}", list.Stdout);
            // The SHEARS_TLS_* defaults of a TLS cluster do not stand in the way of a plain http:// silo.
            var withTlsDefaults = await ShearsProcess.RunWithEnvironmentAsync(
                new Dictionary<string, string> { ["SHEARS_TLS_CERT"] = dir.Sub("no-such.crt"), ["SHEARS_TLS_CA"] = dir.Sub("no-such-ca.crt") }, "list", "--cluster", cluster);
            Assert.True(withTlsDefaults.ExitCode == 0, withTlsDefaults.ToString());
            Assert.Contains("over-http\tcompleted", withTlsDefaults.Stdout);
            var status = await ShearsProcess.RunAsync(Limit, "status", "over-http", "--cluster", cluster, "--json");
            Assert.True(status.ExitCode == 0, status.ToString());
            using (var json = JsonDocument.Parse(status.Stdout))
            {
                Assert.Equal("completed", json.RootElement.GetProperty("state").GetString());
                Assert.Equal(dir.Sub("over-http"), json.RootElement.GetProperty("spec").GetProperty("outputPath").GetString());
            }
            var report = await ShearsProcess.RunAsync(Limit, "report", "over-http", "--cluster", cluster);
            Assert.True(report.ExitCode == 0, report.ToString());
            Assert.Equal(File.ReadAllText(Path.Combine(dir.Sub("over-http"), "shears-report.json")).TrimEnd(), report.Stdout.TrimEnd());

            // Detached, then followed by `watch` to its end; --norm inf travels as "Infinity".
            var detached = await ShearsProcess.RunAsync(Limit, ["run", "--model", dir.Sub("in"), "--out", dir.Sub("rows"), "--sparsity", "0.5",
                "--pattern", "rows", "--norm", "inf", "--scope", "layer", "--cluster", cluster, "--run-id", "rows", "--detach"]);
            Assert.True(detached.ExitCode == 0, detached.ToString());
            Assert.Equal("rows", detached.Stdout.Trim());
            var watched = await ShearsProcess.RunAsync(Limit, "watch", "rows", "--cluster", cluster);
            Assert.True(watched.ExitCode == 0, watched + "\n" + silo.Log);
            Assert.Contains("wrote " + dir.Sub("rows"), watched.Stdout);
            var rowsEmbedded = await ShearsProcess.RunAsync(["run", "--model", dir.Sub("in"), "--out", dir.Sub("rows-embedded"), "--sparsity", "0.5",
                "--pattern", "rows", "--norm", "inf", "--scope", "layer"]);
            Assert.True(rowsEmbedded.ExitCode == 0, rowsEmbedded.ToString());
            Outputs.AssertSameFiles(dir.Sub("rows-embedded"), dir.Sub("rows"));

            // A long run, detached and cancelled over HTTP, leaves nothing behind.
            DemoCheckpoint.Write(dir.Sub("long-in"), new DemoCheckpointOptions(HiddenSize: 256, Layers: 4));
            var longRun = await ShearsProcess.RunAsync(Limit, ["run", "--model", dir.Sub("long-in"), "--out", dir.Sub("long-out"), "--sparsity", "0.5",
                "--schedule", "linear", "--rounds", "400", "--cluster", cluster, "--detach", "--run-id", "long-run"]);
            Assert.True(longRun.ExitCode == 0, longRun.ToString());
            var cancel = await ShearsProcess.RunAsync(Limit, "cancel", "long-run", "--cluster", cluster);
            Assert.True(cancel.ExitCode == 0, cancel + "\n" + silo.Log);
            Assert.Contains("long-run\tcancelled", cancel.Stdout);
            Assert.False(Directory.Exists(dir.Sub("long-out")));
            Assert.Empty(Directory.GetDirectories(dir.Path, ".long-out*"));

            // Refusals name what is at fault, exit 2 and write nothing.
            Directory.CreateDirectory(dir.Sub("taken"));
            File.WriteAllText(Path.Combine(dir.Sub("taken"), "keep.txt"), "mine");
            var taken = await ShearsProcess.RunAsync(Limit, [.. Run("taken"), "--cluster", cluster]);
            Assert.Equal(2, taken.ExitCode);
            Assert.Contains($"--out '{dir.Sub("taken")}'", taken.Stderr);
            Assert.Equal(["keep.txt"], Directory.GetFiles(dir.Sub("taken")).Select(Path.GetFileName));
            var missing = await ShearsProcess.RunAsync(Limit, ["run", "--model", dir.Sub("nowhere"), "--out", dir.Sub("nothing"), "--sparsity", "0.5", "--cluster", cluster]);
            Assert.Equal(2, missing.ExitCode);
            Assert.Contains(dir.Sub("nowhere"), missing.Stderr);
            Assert.True(Empty(dir.Sub("nothing")));
            foreach (string verb in new[] { "status", "watch", "cancel", "report" })
            {
                var unknown = await ShearsProcess.RunAsync(Limit, verb, "no-such-run", "--cluster", cluster);
                Assert.True(unknown.ExitCode != 0, $"{verb}: {unknown}");
                Assert.Contains("no-such-run", unknown.Stderr);
            }
            var nowhere = await ShearsProcess.RunAsync(Limit, [.. Run("unreached"), "--cluster", $"http://127.0.0.1:{SiloProcess.FreePort()}"]);
            Assert.Equal(2, nowhere.ExitCode);
            Assert.Contains("cannot reach the cluster", nowhere.Stderr);
            Assert.True(Empty(dir.Sub("unreached")));
            var malformed = await ShearsProcess.RunAsync(Limit, "list", "--cluster", $"http://127.0.0.1:{silo.HttpPort}/some/path");
            Assert.Equal(2, malformed.ExitCode);
            Assert.Contains("is not http://HOST:PORT", malformed.Stderr);
            var mixed = await ShearsProcess.RunAsync(Limit, "list", "--cluster", $"http://127.0.0.1:{silo.HttpPort},https://127.0.0.1:{silo.HttpPort}");
            Assert.Equal(2, mixed.ExitCode);
            Assert.Contains("all http:// or all https://", mixed.Stderr);
            // A silo named first that cannot be reached: the next one answers.
            var second = await ShearsProcess.RunAsync(Limit, "list", "--cluster", $"http://127.0.0.1:{SiloProcess.FreePort()},http://127.0.0.1:{silo.HttpPort}");
            Assert.True(second.ExitCode == 0, second.ToString());
            Assert.Contains("over-http\tcompleted", second.Stdout);
        }
    }

    /// <summary>
    /// A follower over HTTP names two silos; the one it talks to is SIGKILLed mid-run. The follower goes on through the
    /// other, and `shears run` ends with the run's own outcome and the undisturbed output.
    /// </summary>
    [RedisFact]
    public async Task AFollowerOverHttpGoesOnThroughAnotherSiloWhenItsSiloIsKilled()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 128, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 256, VocabSize: 256));
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "linear", "--rounds", "24", "--shard-elements", "40000", .. extra];
        var calm = await ShearsProcess.RunAsync(Run("calm"));
        Assert.True(calm.ExitCode == 0, calm.ToString());

        string redis = MultiProcessTests.FreshRedisDatabase();
        var a = await SiloProcess.StartAsync("--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), "--http-runs");
        await using (a)
        {
            var b = await SiloProcess.StartAsync("--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), "--http-runs");
            await using (b)
            {
                var following = ShearsProcess.RunAsync(Limit, Run("disturbed", "--cluster", $"http://127.0.0.1:{a.HttpPort},http://127.0.0.1:{b.HttpPort}", "--run-id", "followed"));
                using var http = new HttpClient();
                var deadline = DateTime.UtcNow.AddMinutes(2);
                bool killed = false;
                while (!killed && !following.IsCompleted)
                {
                    Assert.True(DateTime.UtcNow < deadline, "the run reached no round 2\n" + a.Log + "\n" + b.Log);
                    await Task.Delay(50);
                    using var response = await http.GetAsync($"http://127.0.0.1:{b.HttpPort}/api/runs/followed");
                    if (!response.IsSuccessStatusCode) continue;
                    using var page = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    var status = page.RootElement.GetProperty("status");
                    if (status.GetProperty("round").GetInt32() >= 2 && status.GetProperty("state").GetString() == "running")
                    {
                        // The silo the follower talks to (the first named), whichever holds the coordinator.
                        a.Kill();
                        killed = true;
                    }
                }
                if (!killed) Assert.Fail($"the run ended before a silo could be killed\n{await following}");
                var result = await following;
                Assert.True(result.ExitCode == 0, result + "\n" + b.Log);
                Assert.DoesNotContain("Exception", result.Stderr);
                Assert.Contains("wrote " + dir.Sub("disturbed"), result.Stdout);
                Outputs.AssertSameFiles(dir.Sub("calm"), dir.Sub("disturbed"));
            }
        }
    }

    [Fact]
    public async Task ASiloWithoutHttpRunsTakesNoneAndOneOpenToTheNetworkNeedsTls()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var silo = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), "--state-dir", dir.Sub("state"));
        await using (silo)
        {
            var refused = await ShearsProcess.RunAsync(Limit, "run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5", "--cluster", $"http://127.0.0.1:{silo.HttpPort}");
            Assert.Equal(2, refused.ExitCode);
            Assert.Contains("takes no runs over HTTP (start it with --http-runs)", refused.Stderr);
            Assert.True(Empty(dir.Sub("out")));
            // The read-only routes are there as before.
            var list = await ShearsProcess.RunAsync(Limit, "list", "--cluster", $"http://127.0.0.1:{silo.HttpPort}");
            Assert.True(list.ExitCode == 0, list.ToString());
        }
        // Open to the network without TLS: refused before it starts (SiloProcess binds to 127.0.0.1, so started here).
        var info = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { SiloProcess.SiloDll, "--http-runs", "--http-bind", "0.0.0.0", "--http-port", SiloProcess.FreePort().ToString(),
            "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString() })
            info.ArgumentList.Add(a);
        using var open = System.Diagnostics.Process.Start(info)!;
        var stderr = open.StandardError.ReadToEndAsync();
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await open.WaitForExitAsync(wait.Token); }
        finally { if (!open.HasExited) open.Kill(entireProcessTree: true); }
        Assert.Equal(2, open.ExitCode);
        Assert.Contains("--http-runs on --http-bind 0.0.0.0", await stderr);
    }

    [Fact]
    public async Task OverHttpsOnlyClientsTheAuthoritySignedStartRuns()
    {
        using var dir = new TempDir();
        var pki = new TestPki(dir.Path);
        var (ca, caPath) = pki.Authority("cluster-ca");
        var (otherCa, otherCaPath) = pki.Authority("other-ca");
        var siloFiles = pki.Issue("silo", ca);
        var client = pki.Issue("client", ca, [TestPki.ClientOnly]);
        var stranger = pki.Issue("stranger", otherCa, [TestPki.ClientOnly]);
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Run(string output) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.5"];
        var embedded = await ShearsProcess.RunAsync(Run("embedded"));
        Assert.True(embedded.ExitCode == 0, embedded.ToString());

        var silo = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(),
            "--state-dir", dir.Sub("state"), "--http-runs", "--http-tls", "--tls-cert", siloFiles.Certificate, "--tls-key", siloFiles.Key, "--tls-ca", caPath);
        await using (silo)
        {
            string cluster = $"https://127.0.0.1:{silo.HttpPort}";
            var run = await ShearsProcess.RunAsync(Limit, [.. Run("over-https"), "--cluster", cluster, "--tls-cert", client.Certificate, "--tls-key", client.Key, "--tls-ca", caPath]);
            Assert.True(run.ExitCode == 0, run + "\n" + silo.Log);
            Outputs.AssertSameFiles(dir.Sub("embedded"), dir.Sub("over-https"));

            // The authority alone reads, but a run needs this client's certificate.
            var list = await ShearsProcess.RunAsync(Limit, "list", "--cluster", cluster, "--tls-ca", caPath);
            Assert.True(list.ExitCode == 0, list.ToString());
            Assert.Contains("completed", list.Stdout);
            var anonymous = await ShearsProcess.RunAsync(Limit, [.. Run("anonymous"), "--cluster", cluster, "--tls-ca", caPath]);
            Assert.Equal(2, anonymous.ExitCode);
            Assert.Contains("a certificate the cluster's CA signed", anonymous.Stderr);
            Assert.True(Empty(dir.Sub("anonymous")));
            // Another authority's client is refused at the handshake; a client trusting another authority refuses the silo.
            var strange = await ShearsProcess.RunAsync(Limit, [.. Run("strange"), "--cluster", cluster, "--tls-cert", stranger.Certificate, "--tls-key", stranger.Key, "--tls-ca", caPath]);
            Assert.Equal(2, strange.ExitCode);
            Assert.Contains("cannot reach the cluster", strange.Stderr);
            Assert.True(Empty(dir.Sub("strange")));
            var distrust = await ShearsProcess.RunAsync(Limit, "list", "--cluster", cluster, "--tls-ca", otherCaPath);
            Assert.Equal(2, distrust.ExitCode);
            // TLS files with plain HTTP are a mistake, said before anything is sent.
            var plain = await ShearsProcess.RunAsync(Limit, "list", "--cluster", $"http://127.0.0.1:{silo.HttpPort}", "--tls-ca", caPath);
            Assert.Equal(2, plain.ExitCode);
            Assert.Contains("--tls-ca needs an https:// --cluster", plain.Stderr);
        }
    }
}
