using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Configuration;
using Shears.Contracts;
using Shears.Grains;
using Shears.Grains.Shards;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// Pipelines whose stages are slow: a pass through all of them takes longer than Orleans' response timeout, each stage
/// well under it. No grain call may wait for the stages after it, and a step that fails at every try must end the run.
/// </summary>
public class ShortCallTests
{
    private static readonly DemoCheckpointOptions Model = new(HiddenSize: 64, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128, MaxShardBytes: 60_000);
    private static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Delays every layer stage's work on a micro-batch, or fails it.</summary>
    private sealed class SlowStages(TimeSpan delay, bool fail = false) : IStageInterceptor
    {
        public int Calls;

        public async Task BeforeAsync(string shard, StagePlan stage, StageMessage message)
        {
            if (stage.Kind != StagePlan.LayerKind) return;
            Interlocked.Increment(ref Calls);
            await Task.Delay(delay);
            if (fail) throw new TimeoutException($"stage {shard} is made to time out");
        }
    }

    private static async Task<(RunStatus Status, int Calls)> RunAsync(TempDir dir, SlowStages stages, int maxRecoveries, RunSpec spec)
    {
        var cluster = ClusterFixture.Build(2, configure: silo =>
        {
            silo.Services.AddSingleton<IStageInterceptor>(stages);
            silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = ResponseTimeout);
            silo.Services.Configure<ShearsOptions>(o =>
            {
                o.MaxRecoveries = maxRecoveries;
                // Every call on a shard's weights answers with a ticket at once: the coordinator polls each of them.
                o.ShardCallWait = TimeSpan.Zero;
            });
        });
        await cluster.DeployAsync();
        try
        {
            return (await Runs.RunToEndAsync(cluster.Client, spec), stages.Calls);
        }
        finally
        {
            await cluster.DisposeAsync();
        }
    }

    private static string Tokens(string dir, string name, int sequences, int seed)
    {
        var random = new Random(seed);
        var data = Enumerable.Range(0, sequences).Select(_ => Enumerable.Range(0, 16).Select(_ => (long)random.Next(Model.VocabSize)).ToArray()).ToArray();
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, JsonSerializer.Serialize(data));
        return path;
    }

    [Fact]
    public async Task EvaluationAndFineTuningThroughStagesSlowerInTotalThanTheResponseTimeoutComplete()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Model);
        // Four layers of 1.5 s each: 6 s for one micro-batch to cross them, more than the 5 s response timeout.
        var (status, calls) = await RunAsync(dir, new SlowStages(TimeSpan.FromSeconds(1.5)), maxRecoveries: 0, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Rounds = 1,
            EvalData = Tokens(dir.Path, "eval.json", 4, 1), FinetuneData = Tokens(dir.Path, "train.json", 4, 2), FinetuneSteps = 1, Batch = 2,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        Assert.Equal(0, status.Recoveries);
        Assert.NotNull(status.Baseline);
        Assert.NotNull(status.Rounds[0].Eval);
        Assert.NotNull(status.Rounds[0].FinetuneLoss);
        Assert.True(calls >= 3 * 4, $"{calls} slowed stage calls");
        Assert.True(File.Exists(Path.Combine(dir.Sub("out"), "shears-report.json")));
    }

    [Fact]
    public async Task AStepThatFailsAfterEveryRecoveryEndsTheRunNamingTheStepAndItsError()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Model);
        var (status, _) = await RunAsync(dir, new SlowStages(TimeSpan.Zero, fail: true), maxRecoveries: 2, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Rounds = 1, EvalData = Tokens(dir.Path, "eval.json", 4, 1),
        });
        Assert.Equal(RunState.Failed, status.State);
        Assert.Equal(2, status.Recoveries);
        Assert.Contains("baseline evaluation failed again after 2 recoveries", status.Error);
        Assert.Contains("is made to time out", status.Error);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }
}
