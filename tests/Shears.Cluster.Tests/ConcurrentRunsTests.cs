using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>Several users' runs on one three-silo cluster at once.</summary>
[Collection(ClusterCollection.Name)]
public class ConcurrentRunsTests(ClusterFixture fixture)
{
    [Fact]
    public async Task FourRunsAtOnceEachWriteWhatTheyWriteAloneAndAFifthCancelledLeavesNothing()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("ties"));
        DemoCheckpoint.Write(dir.Sub("decoder"), new DemoCheckpointOptions(HiddenSize: 128, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 256, VocabSize: 128));
        DemoCheckpoint.Write(dir.Sub("wide"), new DemoCheckpointOptions(HiddenSize: 192, Layers: 2, Heads: 6, KvHeads: 3, IntermediateSize: 320, VocabSize: 160));
        // Different checkpoints, methods, patterns, scopes and schedules.
        Func<string, RunSpec>[] specs =
        [
            o => new() { ModelPath = dir.Sub("ties"), OutputPath = dir.Sub(o), Sparsity = 0.37, Scope = RunOptions.Scopes.Global, ShardElements = 400 },
            o => new() { ModelPath = dir.Sub("decoder"), OutputPath = dir.Sub(o), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Schedule = RunOptions.Schedules.Linear, Rounds = 4, ShardElements = 20_000 },
            o => new() { ModelPath = dir.Sub("wide"), OutputPath = dir.Sub(o), Sparsity = 0.6, Method = RunOptions.Methods.Random, Seed = 7, Scope = RunOptions.Scopes.Global, ShardElements = 30_000 },
            o => new() { ModelPath = dir.Sub("decoder"), OutputPath = dir.Sub(o), Sparsity = 0.5, Pattern = RunOptions.Patterns.Heads, Scope = RunOptions.Scopes.Layer },
        ];
        var client = fixture.Cluster.Client;
        for (int i = 0; i < specs.Length; i++)
        {
            var alone = await Runs.RunToEndAsync(client, specs[i]($"alone-{i}"));
            Assert.True(alone.State == RunState.Completed, $"run {i} alone: {alone.Error}");
        }

        var many = Runs.ManyRounds(dir);
        string cancelled = "concurrent-cancelled-" + Guid.NewGuid().ToString("N")[..6];
        string[] ids = Enumerable.Range(0, specs.Length).Select(i => $"concurrent-{i}-{Guid.NewGuid().ToString("N")[..6]}").ToArray();
        var victim = client.GetGrain<IRunGrain>(cancelled);
        var starting = ids.Select((id, i) => client.GetGrain<IRunGrain>(id).StartAsync(specs[i]($"together-{i}"))).Append(victim.StartAsync(many("cancelled"))).ToArray();
        await Task.WhenAll(starting);

        // The registry lists every run while they go on.
        var listed = await client.GetGrain<IRunRegistryGrain>(0).ListAsync();
        Assert.All(ids.Append(cancelled), id => Assert.Contains(id, listed));

        // The fifth is cancelled once it is past its second round.
        var deadline = DateTime.UtcNow.AddMinutes(3);
        var status = await victim.GetStatusAsync();
        while (status.Rounds.Count < 2 && !status.IsFinished)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the run to cancel did not reach round 2: {status.Phase}");
            await Task.Delay(20);
            status = await victim.GetStatusAsync();
        }
        Assert.False(status.IsFinished, "the run to cancel finished before it could be cancelled");
        var management = client.GetGrain<IManagementGrain>(0);
        async Task<string[]> ActiveShards() => (await management.GetDetailedGrainStatistics())
            .Select(g => g.GrainId.Key.ToString()!).Where(k => k.StartsWith(cancelled + "/", StringComparison.Ordinal)).ToArray();
        Assert.NotEmpty(await ActiveShards());
        await victim.CancelAsync();

        var finished = new RunStatus[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            var grain = client.GetGrain<IRunGrain>(ids[i]);
            var s = await grain.GetStatusAsync();
            while (!s.IsFinished)
            {
                Assert.True(DateTime.UtcNow < deadline, $"run {i} did not finish: {s.Phase}");
                await Task.Delay(20);
                s = await grain.GetStatusAsync();
            }
            finished[i] = s;
        }
        while (!(status = await victim.GetStatusAsync()).IsFinished)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the cancelled run did not end: {status.Phase}");
            await Task.Delay(20);
        }

        for (int i = 0; i < ids.Length; i++)
        {
            Assert.True(finished[i].State == RunState.Completed, $"run {i} beside the others: {finished[i].Error}");
            foreach (string file in Directory.GetFiles(dir.Sub($"alone-{i}")).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json"))
                Assert.True(File.ReadAllBytes(Path.Combine(dir.Sub($"alone-{i}"), file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub($"together-{i}"), file))),
                    $"run {i}: {file} differs from the run alone");
        }
        Assert.Equal(RunState.Cancelled, status.State);
        Assert.False(Directory.Exists(dir.Sub("cancelled")) && Directory.EnumerateFileSystemEntries(dir.Sub("cancelled")).Any(), "the cancelled run left output");

        // Its shards let go of their weights and deactivate: no shard grain of the cancelled run stays active.
        var release = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var active = await ActiveShards();
            if (active.Length == 0) break;
            Assert.True(DateTime.UtcNow < release, $"{active.Length} shard grains of the cancelled run still active: {string.Join(", ", active)}");
            await Task.Delay(200);
        }
        // And the list still shows every run, finished now.
        listed = await client.GetGrain<IRunRegistryGrain>(0).ListAsync();
        Assert.All(ids.Append(cancelled), id => Assert.Contains(id, listed));
    }
}
