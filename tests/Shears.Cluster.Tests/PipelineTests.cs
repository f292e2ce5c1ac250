using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>Evaluation and fine-tuning as pipelines of grain calls over three silos.</summary>
[Collection(ClusterCollection.Name)]
public class PipelineTests(ClusterFixture fixture)
{
    private static readonly DemoCheckpointOptions Small = new(HiddenSize: 64, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128, MaxShardBytes: 60_000);

    private static string TokenFile(string dir, string name, int sequences, int length, int seed)
    {
        var random = new Random(seed);
        var data = Enumerable.Range(0, sequences).Select(i => Enumerable.Range(0, length - i % 5).Select(_ => (long)random.Next(Small.VocabSize)).ToArray()).ToArray();
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, JsonSerializer.Serialize(data));
        return path;
    }

    private static double Independent(string checkpoint, string tokens)
    {
        using var model = LlamaModel.Load(checkpoint, torch.CPU);
        return Perplexity.Evaluate(model, EvalData.LoadTokenIds(tokens, 128), 4, torch.CPU).Value;
    }

    [Fact]
    public async Task PipelinePerplexityAgreesWithAnIndependentForward()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string eval = TokenFile(dir.Path, "eval.json", 12, 24, 3);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Schedule = RunOptions.Schedules.Cubic, Rounds = 2, EvalData = eval,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        Assert.NotNull(status.Baseline);
        double dense = Independent(dir.Sub("in"), eval);
        double pruned = Independent(dir.Sub("out"), eval);
        Assert.True(Math.Abs(status.Baseline!.Value - dense) / dense < 1e-4, $"baseline {status.Baseline.Value} vs {dense}");
        Assert.True(Math.Abs(status.Rounds[^1].Eval!.Value - pruned) / pruned < 1e-4, $"round 2 {status.Rounds[^1].Eval!.Value} vs {pruned}");
        Assert.NotEqual(dense, pruned);
        Assert.Equal(12L * 24 - (0 + 1 + 2 + 3 + 4 + 0 + 1 + 2 + 3 + 4 + 0 + 1) - 12, status.Baseline.Tokens);

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        Assert.Equal("perplexity", report.RootElement.GetProperty("baseline").GetProperty("eval").GetProperty("metric").GetString());
        Assert.Equal(2, report.RootElement.GetProperty("rounds").EnumerateArray().Count(r => r.TryGetProperty("eval", out _)));
        // One shard per stage: the embedding, three layers, the head, spread over the silos.
        Assert.Equal(5, report.RootElement.GetProperty("shards").GetArrayLength());
        Assert.Equal(3, report.RootElement.GetProperty("shards").EnumerateArray().Select(s => s.GetProperty("silo").GetString()).Distinct().Count());
    }

    [Fact]
    public async Task FineTuningKeepsMaskedWeightsAtZeroAndTheOutputHoldsTheTrainedWeights()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small with { DType = TensorDType.F32 });
        string eval = TokenFile(dir.Path, "eval.json", 8, 20, 5);
        string train = TokenFile(dir.Path, "train.json", 16, 20, 6);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.6, Schedule = RunOptions.Schedules.Linear, Rounds = 2,
            EvalData = eval, FinetuneSteps = 4, FinetuneData = train, LearningRate = 1e-3, Batch = 4,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        Assert.All(status.Rounds, r => Assert.NotNull(r.FinetuneLoss));

        // The output is the fine-tuned model: evaluating it independently gives the last round's figure.
        double output = Independent(dir.Sub("out"), eval);
        Assert.True(Math.Abs(status.Rounds[^1].Eval!.Value - output) / output < 1e-4, $"{status.Rounds[^1].Eval!.Value} vs {output}");

        // Masked weights are exactly +0.0; the others moved away from the input's values.
        var input = CheckpointReader.ReadManifest(dir.Sub("in"));
        var pruned = CheckpointReader.ReadManifest(dir.Sub("out"));
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        long changedKept = 0;
        foreach (var t in report.RootElement.GetProperty("tensors").EnumerateArray())
        {
            string name = t.GetProperty("name").GetString()!;
            var before = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(input, input.Get(name))).ToArray();
            var after = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(pruned, pruned.Get(name))).ToArray();
            long zeros = after.LongCount(v => v == 0 && !float.IsNegative(v));
            Assert.True(zeros >= t.GetProperty("maskedWeights").GetInt64(), name);
            changedKept += after.Where((v, i) => v != 0 && v != before[i]).LongCount();
        }
        Assert.True(changedKept > 0, "fine-tuning changed no weight");
        // Untrained tensors (embedding, norms, head) are copied byte for byte.
        Assert.Equal(CheckpointReader.ReadTensor(input, input.Get("model.embed_tokens.weight")), CheckpointReader.ReadTensor(pruned, pruned.Get("model.embed_tokens.weight")));
    }
}
