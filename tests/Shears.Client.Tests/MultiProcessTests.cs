using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>Two silo processes clustered over Redis and the `shears` client against them, as users run it.</summary>
[Collection("redis")]
public class MultiProcessTests
{
    private static int _database = 1;

    /// <summary>Each test gets its own Redis database, so no test sees another's silos in the membership table.</summary>
    internal static string FreshRedisDatabase()
    {
        // Emptied first: a Redis kept from earlier runs may still list their dead silos, which new silos would wait for.
        int database = Interlocked.Increment(ref _database);
        using var redis = StackExchange.Redis.ConnectionMultiplexer.Connect($"{RedisFactAttribute.Redis},allowAdmin=true");
        redis.GetServer(redis.GetEndPoints()[0]).FlushDatabase(database);
        return $"{RedisFactAttribute.Redis},defaultDatabase={database}";
    }

    /// <summary>A tiny LLaMA-layout checkpoint in dir/in and three token-id sequences for it; returns the sequences' file.</summary>
    internal static string WriteTinyDecoder(TempDir dir)
    {
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 32, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 64, VocabSize: 96));
        string ids = Path.Combine(dir.Path, "ids.json");
        File.WriteAllText(ids, "[[1, 5, 9, 13, 17, 21, 25, 29], [2, 4, 8, 16, 32, 64, 3, 6], [90, 80, 70, 60, 50, 40, 30, 20]]");
        return ids;
    }

    private static async Task<(SiloProcess A, SiloProcess B)> TwoSilos(string redis, params string[] extra)
    {
        var a = await SiloProcess.StartAsync(["--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), .. extra]);
        var b = await SiloProcess.StartAsync(["--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString(), .. extra]);
        return (a, b);
    }

    private static void AssertSameCheckpoint(string expected, string actual)
    {
        foreach (string file in Directory.GetFiles(expected).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json"))
            Assert.True(File.ReadAllBytes(Path.Combine(expected, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actual, file))), $"{file} differs");
    }

    [RedisFact]
    public async Task TwoSilosOverRedisGiveTheEmbeddedOutputAndShowTheRunInMetrics()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.37", "--shard-elements", "1500", "--schedule", "linear", "--rounds", "2", .. extra];
        var embedded = await ShearsProcess.RunAsync(Run("embedded"));
        Assert.True(embedded.ExitCode == 0, embedded.ToString());

        string redis = FreshRedisDatabase();
        var (a, b) = await TwoSilos(redis, "--data-root", dir.Path);
        await using (a)
        await using (b)
        {
            string cluster = "redis://" + redis;
            var result = await ShearsProcess.RunAsync(Run("cluster", "--cluster", cluster, "--run-id", "two-silos"));
            Assert.True(result.ExitCode == 0, result + "\n" + a.Log + b.Log);
            AssertSameCheckpoint(dir.Sub("embedded"), dir.Sub("cluster"));

            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("cluster"), "shears-report.json")));
            Assert.Equal(2, report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().Count());
            foreach (var silo in new[] { a, b })
            {
                string metrics = await silo.MetricsAsync();
                Assert.Contains("shears_run_round{otel_scope_name=\"Shears\",otel_scope_version=\"1.0\",run=\"two-silos\"} 2", metrics);
                Assert.Contains("shears_run_achieved_sparsity{otel_scope_name=\"Shears\",otel_scope_version=\"1.0\",run=\"two-silos\"} 0.37", metrics);
                Assert.Contains("orleans_", metrics);
            }

            // The other verbs against the running cluster.
            var status = await ShearsProcess.RunAsync("status", "two-silos", "--json", "--cluster", cluster);
            Assert.True(status.ExitCode == 0, status.ToString());
            Assert.Equal("completed", JsonDocument.Parse(status.Stdout).RootElement.GetProperty("state").GetString());
            var list = await ShearsProcess.RunAsync("list", "--cluster", cluster);
            Assert.Contains("two-silos\tcompleted", list.Stdout);
            var printed = await ShearsProcess.RunAsync("report", "two-silos", "--cluster", cluster);
            Assert.Equal(File.ReadAllText(Path.Combine(dir.Sub("cluster"), "shears-report.json")).Trim(), printed.Stdout.Trim());

            // Paths outside the silos' data roots are refused by name.
            var outside = await ShearsProcess.RunAsync("run", "--model", "/etc", "--out", dir.Sub("nope"), "--sparsity", "0.5", "--cluster", cluster);
            Assert.Equal(2, outside.ExitCode);
            Assert.Contains("--model '/etc' lies outside", outside.Stderr);
        }
    }

    /// <summary>
    /// <c>shears watch</c> follows a run started elsewhere (--detach) to its end and prints its rounds;
    /// <c>shears status</c> prints the same rounds table as <c>shears run</c>.
    /// </summary>
    [RedisFact]
    public async Task WatchFollowsADetachedRunAndStatusPrintsTheRoundsTable()
    {
        using var dir = new TempDir();
        string ids = WriteTinyDecoder(dir);
        string redis = FreshRedisDatabase();
        var (a, b) = await TwoSilos(redis);
        await using (a)
        await using (b)
        {
            string cluster = "redis://" + redis;
            var detached = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5", "--rounds", "3",
                "--schedule", "linear", "--eval", ids, "--finetune-steps", "20", "--finetune-data", ids, "--batch", "2", "--cluster", cluster, "--run-id", "watched", "--detach");
            Assert.True(detached.ExitCode == 0, detached.ToString());
            var watched = await ShearsProcess.RunAsync("watch", "watched", "--cluster", cluster);
            Assert.True(watched.ExitCode == 0, watched + "\n" + a.Log + b.Log);
            Assert.True(File.Exists(Path.Combine(dir.Sub("out"), "shears-report.json")), "watch returned before the run wrote its output");
            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
            var rounds = report.RootElement.GetProperty("rounds").EnumerateArray().ToArray();
            // Redirected output: a line per round as it finishes, then the table and the output's path.
            foreach (var round in rounds)
                Assert.Contains($"round {round.GetProperty("round")}/3\ttarget {round.GetProperty("targetSparsity").GetDouble():F4}", watched.Stdout);
            Assert.Contains($"wrote {dir.Sub("out")} (run watched)", watched.Stdout);

            var status = await ShearsProcess.RunAsync("status", "watched", "--cluster", cluster);
            Assert.True(status.ExitCode == 0, status.ToString());
            Assert.Contains("run watched: completed (completed), round 3/3", status.Stdout);
            foreach (string column in new[] { "target", "achieved", "threshold", "fine-tune loss", "perplexity", "seconds" })
                Assert.Contains(column, status.Stdout);
            // One table row per round, holding the round's fine-tune loss as the report gives it.
            foreach (var round in rounds)
                Assert.Contains(round.GetProperty("finetuneLoss").GetDouble().ToString("F4", System.Globalization.CultureInfo.InvariantCulture), status.Stdout);

            // Bad input names what is wrong.
            var unknown = await ShearsProcess.RunAsync("watch", "no-such-run", "--cluster", cluster);
            Assert.Equal(2, unknown.ExitCode);
            Assert.Contains("no run 'no-such-run'", unknown.Stderr);
        }
        var noCluster = await ShearsProcess.RunAsync("watch", "watched");
        Assert.Equal(2, noCluster.ExitCode);
        Assert.Contains("'shears watch' needs --cluster", noCluster.Stderr);
    }

    /// <summary>
    /// An evaluated run: the coordinator's silo serves the evaluation of the last round as <c>shears_run_eval</c>, the
    /// value the report gives (perplexity of the pruned model, not the dense baseline's).
    /// </summary>
    [RedisFact]
    public async Task TheEvaluationOfTheLastRoundShowsInMetrics()
    {
        using var dir = new TempDir();
        string ids = WriteTinyDecoder(dir);
        string redis = FreshRedisDatabase();
        var (a, b) = await TwoSilos(redis);
        await using (a)
        await using (b)
        {
            var result = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.8", "--rounds", "2",
                "--schedule", "linear", "--eval", ids, "--cluster", "redis://" + redis, "--run-id", "evaluated");
            Assert.True(result.ExitCode == 0, result + "\n" + a.Log + b.Log);
            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
            double last = report.RootElement.GetProperty("rounds").EnumerateArray().Last().GetProperty("eval").GetProperty("value").GetDouble();
            double baseline = report.RootElement.GetProperty("baseline").GetProperty("eval").GetProperty("value").GetDouble();
            Assert.NotEqual(baseline, last);

            const string Series = "shears_run_eval{otel_scope_name=\"Shears\",otel_scope_version=\"1.0\",run=\"evaluated\"} ";
            var served = new List<double>();
            foreach (var silo in new[] { a, b })
            {
                foreach (string line in (await silo.MetricsAsync()).Split('\n'))
                {
                    if (!line.StartsWith(Series, StringComparison.Ordinal)) continue;
                    string value = line[Series.Length..].Split(' ')[0];
                    served.Add(double.Parse(value, System.Globalization.CultureInfo.InvariantCulture));
                }
            }
            double shown = Assert.Single(served); // the coordinator's silo only
            Assert.Equal(last, shown, last * 1e-9);
        }
    }

    [RedisFact]
    public async Task DetachAndCancelLeaveNoOutput()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 256, Layers: 4));
        string redis = FreshRedisDatabase();
        var (a, b) = await TwoSilos(redis);
        await using (a)
        await using (b)
        {
            string cluster = "redis://" + redis;
            var detached = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5",
                "--schedule", "linear", "--rounds", "400", "--cluster", cluster, "--detach", "--run-id", "long-run");
            Assert.True(detached.ExitCode == 0, detached.ToString());
            Assert.Equal("long-run", detached.Stdout.Trim());
            var cancel = await ShearsProcess.RunAsync("cancel", "long-run", "--cluster", cluster);
            Assert.True(cancel.ExitCode == 0, cancel.ToString());
            Assert.Contains("cancelled", cancel.Stdout);
            Assert.False(Directory.Exists(dir.Sub("out")));
            Assert.Empty(Directory.GetDirectories(dir.Path, ".*"));
        }
    }

    [RedisFact]
    public async Task KillingTheCoordinatorsSiloMidRunStillEndsWithTheUndisturbedOutput()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 384, Layers: 6, Heads: 6, KvHeads: 2, IntermediateSize: 1024));
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "cubic", "--rounds", "24", "--shard-elements", "300000", .. extra];
        var calm = await ShearsProcess.RunAsync(Run("calm"));
        Assert.True(calm.ExitCode == 0, calm.ToString());

        string redis = FreshRedisDatabase();
        var (a, b) = await TwoSilos(redis);
        await using (a)
        await using (b)
        {
            var started = await ShearsProcess.RunAsync(Run("disturbed", "--cluster", "redis://" + redis, "--detach", "--run-id", "kill-me"));
            Assert.True(started.ExitCode == 0, started.ToString());
            await using var connection = await ClusterConnection.OpenAsync(new ClusterTarget("redis://" + redis), CancellationToken.None);
            var grain = connection.Client.GetGrain<IRunGrain>("kill-me");
            string? killed = null;
            RunStatus status = await grain.GetStatusAsync();
            var deadline = DateTime.UtcNow.AddMinutes(4);
            while (!status.IsFinished)
            {
                Assert.True(DateTime.UtcNow < deadline, $"run did not finish: {status.Phase}\n{a.Log}\n{b.Log}");
                if (killed is null && status.Round >= 3 && status.Coordinator is { } coordinator)
                {
                    var victim = coordinator.Contains($":{SiloPort(a)}:") ? a : b;
                    victim.Kill();
                    killed = coordinator;
                }
                await Task.Delay(100);
                try { status = await grain.GetStatusAsync(); }
                catch (Exception e) when (e is OrleansException or TimeoutException) { await Task.Delay(500); }
            }
            Assert.NotNull(killed);
            Assert.True(status.State == RunState.Completed, status.Error + "\n" + a.Log + "\n" + b.Log);
            Assert.NotEqual(killed, status.Coordinator);
            Assert.Equal(24, status.Rounds.Count);
            AssertSameCheckpoint(dir.Sub("calm"), dir.Sub("disturbed"));
        }
    }

    /// <summary>
    /// `shears run` follows a run while a silo is SIGKILLed under it, again and again (a fresh silo replaces the dead one
    /// each time). How the follower's subscription breaks differs from one kill to the next: killing the silo without the
    /// coordinator often leaves the follower talking to a coordinator activation that has no record of its subscription
    /// (EnumerationAbortedException, which once ended `shears run` with an unhandled exception in 1 run of 5); killing the
    /// coordinator's own silo leaves its call unanswered. Every follower must end with the run's own outcome.
    /// </summary>
    [RedisFact]
    public async Task FollowingARunSurvivesASiloKilledUnderItTimeAfterTime()
    {
        // Seven kills of the other silo: a break that struck 1 follower in 5 escapes them with probability 0.8^7 ≈ 21%
        // (on this test's small run it struck about every other one).
        const int Repetitions = 8;
        // Rounds enough that a run is still going when the poll below, 50 ms apart, sees round 2 (with 8 rounds a fast
        // window finished some runs first).
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 128, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 256, VocabSize: 256));
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "linear", "--rounds", "24", "--shard-elements", "40000", .. extra];
        var calm = ShearsProcess.RunAsync(Run("calm"));

        string redis = FreshRedisDatabase();
        var (first, second) = await TwoSilos(redis);
        var silos = new List<SiloProcess> { first, second };
        try
        {
            var calmResult = await calm;
            Assert.True(calmResult.ExitCode == 0, calmResult.ToString());
            await using var connection = await ClusterConnection.OpenAsync(new ClusterTarget("redis://" + redis), CancellationToken.None);
            for (int repetition = 0; repetition < Repetitions; repetition++)
            {
                string runId = $"followed-{repetition}", output = $"out-{repetition}";
                var following = ShearsProcess.RunAsync(Run(output, "--cluster", "redis://" + redis, "--run-id", runId));
                var grain = connection.Client.GetGrain<IRunGrain>(runId);
                // The kill that broke followers, and once the coordinator's own silo, whose silence costs seconds.
                bool killCoordinatorsSilo = repetition == Repetitions - 1;
                SiloProcess? victim = null;
                var deadline = DateTime.UtcNow.AddMinutes(2);
                while (victim is null && !following.IsCompleted)
                {
                    Assert.True(DateTime.UtcNow < deadline, $"run {runId} reached no round 2\n{string.Join("\n", silos.Select(s => s.Log))}");
                    await Task.Delay(50);
                    RunStatus status;
                    try { status = await grain.GetStatusAsync(); }
                    catch (Exception e) when (e is OrleansException or TimeoutException) { continue; }
                    if (status.Round >= 2 && !status.IsFinished && status.Coordinator is { } coordinator)
                        victim = silos.Single(s => coordinator.Contains($":{s.SiloPort}:") == killCoordinatorsSilo);
                }
                if (victim is null) Assert.Fail($"run {runId} ended before a silo could be killed\n{await following}");
                // From here on only the follower calls the coordinator, as when a user watches a run alone.
                victim.Kill();
                // The next repetition's second silo starts while the follower recovers.
                var replacement = repetition + 1 < Repetitions
                    ? SiloProcess.StartAsync(["--redis", redis, "--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", SiloProcess.FreePort().ToString()])
                    : null;
                ShearsProcess.Result result;
                string logs = "";
                try { result = await following; }
                finally
                {
                    logs = string.Join("\n", silos.Select(s => s.Log));
                    silos.Remove(victim);
                    await victim.DisposeAsync();
                    if (replacement is not null) silos.Add(await replacement);
                }
                Assert.True(result.ExitCode == 0, $"repetition {repetition} (killed the {(killCoordinatorsSilo ? "coordinator's" : "other")} silo): {result}\n{logs}");
                Assert.DoesNotContain("Unhandled exception", result.Stderr);
                Assert.Contains($"wrote {dir.Sub(output)} (run {runId})", result.Stdout);
                AssertSameCheckpoint(dir.Sub("calm"), dir.Sub(output));
            }
        }
        finally
        {
            foreach (var silo in silos) await silo.DisposeAsync();
        }
    }

    /// <summary>
    /// Two silo processes on one machine without any service (the second joins the first with --primary; the runs'
    /// state in files under a shared --state-dir): the silo that joined is killed mid-run, preferably while it holds
    /// the run's coordinator, which then resumes on the other silo from the state files; the output is the undisturbed one.
    /// </summary>
    [Fact]
    public async Task TwoSilosWithoutAnyServiceSurviveKillingOne()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 384, Layers: 6, Heads: 6, KvHeads: 2, IntermediateSize: 1024));
        RunSpec Spec(string output) => new()
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub(output), Sparsity = 0.6, Schedule = RunOptions.Schedules.Cubic, Rounds = 24, ShardElements = 300_000,
        };
        var calm = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("calm"), "--sparsity", "0.6", "--schedule", "cubic",
            "--rounds", "24", "--shard-elements", "300000");
        Assert.True(calm.ExitCode == 0, calm.ToString());

        string primary = SiloProcess.FreePort().ToString();
        int gatewayA = SiloProcess.FreePort(), gatewayB = SiloProcess.FreePort();
        var a = await SiloProcess.StartAsync("--silo-port", primary, "--gateway-port", gatewayA.ToString(), "--state-dir", dir.Sub("state"));
        await using (a)
        {
            var b = await SiloProcess.StartAsync("--silo-port", SiloProcess.FreePort().ToString(), "--gateway-port", gatewayB.ToString(),
                "--primary", "127.0.0.1:" + primary, "--state-dir", dir.Sub("state"));
            await using (b)
            {
                await using var connection = await ClusterConnection.OpenAsync(new ClusterTarget($"127.0.0.1:{gatewayA},127.0.0.1:{gatewayB}"), CancellationToken.None);
                // Coordinators are placed at random: start runs until one lands on b (cancelled ones leave nothing).
                IRunGrain grain = null!;
                RunStatus status = null!;
                for (int attempt = 0; attempt < 8; attempt++)
                {
                    grain = connection.Client.GetGrain<IRunGrain>($"no-service-{attempt}");
                    status = await grain.StartAsync(Spec("disturbed"));
                    while (status.Coordinator is null && !status.IsFinished) status = await grain.GetStatusAsync();
                    if (status.Coordinator!.Contains($":{b.SiloPort}:")) break;
                    await grain.CancelAsync();
                    while (!(await grain.GetStatusAsync()).IsFinished) await Task.Delay(50);
                }
                bool killed = false;
                var deadline = DateTime.UtcNow.AddMinutes(4);
                while (!status.IsFinished)
                {
                    Assert.True(DateTime.UtcNow < deadline, $"run did not finish: {status.Phase}\n{a.Log}\n{b.Log}");
                    if (!killed && status.Round >= 3)
                    {
                        b.Kill();
                        killed = true;
                    }
                    await Task.Delay(100);
                    try { status = await grain.GetStatusAsync(); }
                    catch (Exception e) when (e is OrleansException or TimeoutException) { await Task.Delay(500); }
                }
                Assert.True(killed, "the run ended before a silo could be killed");
                Assert.True(status.State == RunState.Completed, status.Error + "\n" + a.Log + "\n" + b.Log);
                Assert.DoesNotContain($":{b.SiloPort}:", status.Coordinator);
                Assert.Equal(24, status.Rounds.Count);
                AssertSameCheckpoint(dir.Sub("calm"), dir.Sub("disturbed"));
                Assert.NotEmpty(Directory.GetFiles(dir.Sub("state"), "*.state"));
            }
        }
    }

    private static string SiloPort(SiloProcess silo) => silo.SiloPort;

    /// <summary>
    /// A detached run whose coordinator's silo is killed mid-run, and then no client at all: the run's reminder, kept in
    /// Redis, calls the coordinator, which re-activates on the other silo and resumes; the test only watches the
    /// filesystem until the output appears, the undisturbed one byte for byte.
    /// </summary>
    [RedisFact]
    public async Task ADetachedRunWhoseCoordinatorsSiloIsKilledFinishesWithNoClient()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 384, Layers: 6, Heads: 6, KvHeads: 2, IntermediateSize: 1024));
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.6", "--schedule", "linear", "--rounds", "40", "--shard-elements", "300000", .. extra];
        var calm = await ShearsProcess.RunAsync(Run("calm"));
        Assert.True(calm.ExitCode == 0, calm.ToString());

        string redis = FreshRedisDatabase();
        // A reminder every 2 s rather than every minute, so that the test does not wait a minute for it.
        var (a, b) = await TwoSilos(redis, "--Shears:ResumeCheckPeriod", "00:00:02");
        await using (a)
        await using (b)
        {
            var started = await ShearsProcess.RunAsync(Run("detached", "--cluster", "redis://" + redis, "--detach", "--run-id", "detached"));
            Assert.True(started.ExitCode == 0, started.ToString());
            // Round 3's masks on disk: the run is under way, with 37 rounds to go.
            string state = Path.Combine(dir.Path, ".shears-state-detached");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (!Directory.Exists(state) || !Directory.EnumerateFiles(state, "*.round-3.mask", SearchOption.AllDirectories).Any())
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), $"the run did not reach round 3\n{a.Log}\n{b.Log}");
                await Task.Delay(20);
            }
            // Where the coordinator lives, from the grain directory (asking the run itself would be a call to it).
            SiloAddress? coordinator;
            await using (var connection = await ClusterConnection.OpenAsync(new ClusterTarget("redis://" + redis), CancellationToken.None))
                coordinator = await connection.Client.GetGrain<IManagementGrain>(0).GetActivationAddress(connection.Client.GetGrain<IRunGrain>("detached"));
            Assert.NotNull(coordinator);
            var (victim, survivor) = coordinator.Endpoint.Port.ToString() == SiloPort(a) ? (a, b) : (b, a);
            victim.Kill();
            Assert.False(Directory.Exists(dir.Sub("detached")), "the run ended before its coordinator's silo was killed");

            clock.Restart();
            while (!Directory.Exists(dir.Sub("detached")))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3), $"the detached run did not finish after its coordinator's silo was killed\n{survivor.Log}");
                await Task.Delay(100);
            }
            AssertSameCheckpoint(dir.Sub("calm"), dir.Sub("detached"));

            // Now that it is over: the surviving silo coordinated the end of it.
            var status = await ShearsProcess.RunAsync("status", "detached", "--json", "--cluster", "redis://" + redis);
            Assert.True(status.ExitCode == 0, status.ToString());
            var json = JsonDocument.Parse(status.Stdout).RootElement;
            Assert.Equal("completed", json.GetProperty("state").GetString());
            Assert.Contains($":{SiloPort(survivor)}:", json.GetProperty("coordinator").GetString());
        }
    }
}

[CollectionDefinition("redis", DisableParallelization = true)]
public sealed class RedisCollection;
