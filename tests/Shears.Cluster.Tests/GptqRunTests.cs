using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Shears.Contracts;
using Shears.Grains.Shards;
using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Models;
using Shears.Pruning.Quantization;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>--quant-method gptq through the calibration pipeline on three silos, checked against GPTQ run in process on the files.</summary>
[Collection(ClusterCollection.Name)]
public class GptqRunTests(ClusterFixture fixture)
{
    // The MLP's width (88) is not a multiple of the group (16): the last group of a down_proj row is short.
    private static readonly DemoCheckpointOptions Small = new(HiddenSize: 64, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 88, VocabSize: 128, MaxShardBytes: 60_000);

    // Sequences of different lengths: the padding of a micro-batch is no calibration input.
    private static string TokenFile(string dir, string name, int sequences, int length, int seed) => PipelineTests.TokenFile(dir, name, sequences, length, seed);

    private static double IndependentPerplexity(string dense, string eval)
    {
        using var model = LlamaModel.Load(dense, torch.CPU);
        return Perplexity.Evaluate(model, EvalData.LoadTokenIds(eval, 128), 4, torch.CPU).Value;
    }

    private static void AssertReportsEval(RunStatus status, double independent) =>
        Assert.True(Math.Abs(status.Rounds[^1].Eval!.Value - independent) / independent < 1e-4, $"report {status.Rounds[^1].Eval!.Value} vs {independent}");

    private static BitMask ZerosOf(torch.Tensor weight)
    {
        var values = weight.data<float>().ToArray();
        var mask = new BitMask(values.Length);
        for (int i = 0; i < values.Length; i++) if (values[i] == 0) mask.Set(i);
        return mask;
    }

    /// <summary>What GPTQ makes of <paramref name="weight"/> (pruned) from the inputs given, dequantized.</summary>
    private static float[] ReferenceGptq(torch.Tensor weight, InputStatistics inputs, QuantScheme scheme)
    {
        using var result = Gptq.Quantize(weight, inputs, scheme, TensorDType.F32, ZerosOf(weight), tensorName: "reference");
        return MemoryMarshal.Cast<byte, float>(result.Quantized.DequantizedBytes()).ToArray();
    }

    [Fact]
    public async Task GptqQuantizesEachLayerFromWhatTheAlreadyQuantizedLayersBeforeItCompute()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small with { DType = TensorDType.F32 });
        string calibration = TokenFile(dir.Path, "calibration.json", 9, 14, 21);
        string eval = TokenFile(dir.Path, "eval.json", 6, 20, 22);
        var pruned = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("pruned"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer };
        Assert.Equal(RunState.Completed, (await Runs.RunToEndAsync(fixture.Cluster.Client, pruned)).State);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, pruned with
        {
            OutputPath = dir.Sub("out"), EvalData = eval, Quantize = "W4A16", GroupSize = 16, QuantMethod = "gptq", Calibration = calibration,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        Assert.True(status.Rounds[0].Quantized!.Count == 21);

        var dense = PackQuantized.Dequantize(dir.Sub("out"), dir.Sub("dense"));
        foreach (var (name, values) in dense)
        {
            var before = QuantizeTests.Weights(dir.Sub("pruned"), name);
            Assert.All(Enumerable.Range(0, values.Length).Where(i => before[i] == 0), i => Assert.Equal(0f, values[i]));
        }
        AssertReportsEval(status, IndependentPerplexity(dir.Sub("dense"), eval));

        // Layer 0's q_proj from its inputs RMSNorm(embedding(tokens)); layer 1's from what layer 0 computes quantized.
        var scheme = QuantScheme.Parse("W4A16", 16);
        var sequences = EvalData.LoadTokenIds(calibration, 128);
        using var model = LlamaModel.Load(dir.Sub("pruned"), torch.CPU);
        using var quantized = LlamaModel.Load(dir.Sub("dense"), torch.CPU);
        torch.Tensor Normed(torch.Tensor h, torch.Tensor norm) => (h * torch.rsqrt(h.pow(2).mean([-1], keepdim: true) + model.Config.RmsNormEps) * norm)[0];
        torch.Tensor Embedded(long[] sequence) => model.Embedding.Forward(torch.tensor(sequence, [1, sequence.Length]));
        using var first = new InputStatistics(Small.HiddenSize, withGram: true);
        using var second = new InputStatistics(Small.HiddenSize, withGram: true);
        using var secondFromPruned = new InputStatistics(Small.HiddenSize, withGram: true);
        foreach (var sequence in sequences)
        {
            using var scope = torch.NewDisposeScope();
            var embedded = Embedded(sequence);
            first.Add(Normed(embedded, model.Layers[0].InputNorm));
            second.Add(Normed(quantized.Layers[0].Forward(embedded), model.Layers[1].InputNorm));
            secondFromPruned.Add(Normed(model.Layers[0].Forward(embedded), model.Layers[1].InputNorm));
        }
        // Layer 0 is equal. Layer 1's inputs went through attention over padded micro-batches in the run and sequence by
        // sequence here, and GPTQ's roundings follow the smallest difference: counted, 30 of 4096 weights apart on one
        // x86-64 CPU, 175 on an AVX2-only one, 337 on an AMD EPYC with AVX-512 and VNNI, against 1510 with inputs from the
        // unquantized layer 0. So layer 1 is compared by what its weights do to its inputs: ‖(A − B)·Xᵀ‖² over the
        // quantized layer 0's outputs X (measured: 0.004 from the reference on those inputs, 0.25 from the one on the
        // unquantized layer's, against a quantization error ‖(W − Q)·Xᵀ‖² of 0.61).
        Assert.Equal(0, Differing(ReferenceGptq(model.Layers[0].QProj, first, scheme), dense["model.layers.0.self_attn.q_proj.weight"]));
        var actual1 = dense["model.layers.1.self_attn.q_proj.weight"];
        var fromQuantized = ReferenceGptq(model.Layers[1].QProj, second, scheme);
        var fromPruned = ReferenceGptq(model.Layers[1].QProj, secondFromPruned, scheme);
        var pruned1 = model.Layers[1].QProj.detach().cpu().contiguous().data<float>().ToArray();
        double toQuantized = OutputDistance(actual1, fromQuantized, second), toPruned = OutputDistance(actual1, fromPruned, second);
        double error = OutputDistance(pruned1, fromQuantized, second);
        Assert.True(toQuantized * 10 < toPruned && toQuantized < error / 20,
            $"layer 1: ‖ΔX‖² {toQuantized:G4} from GPTQ on the quantized layer 0's outputs ({Differing(fromQuantized, actual1)} of {actual1.Length} weights differ), " +
            $"{toPruned:G4} from GPTQ on the unquantized one's ({Differing(fromPruned, actual1)} differ); quantization error {error:G4}");

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        var q = report.RootElement.GetProperty("quantization");
        Assert.Equal("gptq", q.GetProperty("method").GetString());
        Assert.False(q.GetProperty("joint").GetBoolean());
        Assert.False(q.GetProperty("actOrder").GetBoolean());
    }

    /// <summary>Σ over the inputs x of ‖(A − B)·x‖²: tr((A − B)·G·(A − B)ᵀ) with the inputs' Gram matrix G, in fp64.</summary>
    private static double OutputDistance(float[] a, float[] b, InputStatistics inputs)
    {
        using var scope = torch.NewDisposeScope();
        using var gram = inputs.Gram(torch.CPU);
        long features = gram.shape[0];
        var d = torch.tensor(a, [a.Length / features, features]).to(torch.ScalarType.Float64) - torch.tensor(b, [b.Length / features, features]).to(torch.ScalarType.Float64);
        return d.matmul(gram).mul(d).sum().item<double>();
    }

    private static int Differing(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        return Enumerable.Range(0, expected.Length).Count(i => expected[i] != actual[i]);
    }

    [Fact]
    public async Task ActivationOrderStoresEachColumnsGroupAndThePerplexityFromTheFilesIsTheReports()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string calibration = TokenFile(dir.Path, "calibration.json", 8, 16, 31);
        string eval = TokenFile(dir.Path, "eval.json", 6, 20, 32);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Method = "wanda",
            Calibration = calibration, EvalData = eval, Quantize = "W4A16_ASYM", GroupSize = 16, QuantMethod = "gptq", ActOrder = true,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        var output = CheckpointReader.ReadManifest(dir.Sub("out"));
        var groupIndex = output.Get("model.layers.2.mlp.down_proj.weight_g_idx");
        Assert.Equal(TensorDType.I32, groupIndex.DType);
        Assert.Equal([88L], groupIndex.Shape);
        var groups = MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(output, groupIndex)).ToArray();
        // Groups are consecutive in activation order: 16 columns each, the last 8, not in column order.
        Assert.Equal(Enumerable.Range(0, 6).Select(g => g < 5 ? 16 : 8), groups.GroupBy(g => g).OrderBy(g => g.Key).Select(g => g.Count()));
        Assert.False(groups.SequenceEqual(Enumerable.Range(0, 88).Select(c => c / 16)), "activation order left the columns in their order");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "config.json")))!["quantization_config"]!;
        Assert.Equal("group", (string)config["config_groups"]!["group_0"]!["weights"]!["actorder"]!);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "model.safetensors.index.json")))!["weight_map"]!.AsObject();
        Assert.Equal(21, index.Count(kv => kv.Key.EndsWith(".weight_g_idx", StringComparison.Ordinal)));

        var dense = PackQuantized.Dequantize(dir.Sub("out"), dir.Sub("dense"));
        foreach (var (name, values) in dense)
        {
            // Wanda masks half of every row; each of those weights dequantizes to exactly 0.
            var shape = MemoryMarshal.Cast<byte, long>(CheckpointReader.ReadTensor(output, output.Get(name[..^".weight".Length] + ".weight_shape"))).ToArray();
            for (long r = 0; r < shape[0]; r++)
                Assert.True(values.AsSpan((int)(r * shape[1]), (int)shape[1]).ToArray().Count(v => v == 0) >= (int)Math.Round(0.5 * shape[1], MidpointRounding.ToEven), $"{name} row {r}");
        }
        AssertReportsEval(status, IndependentPerplexity(dir.Sub("dense"), eval));
    }

    [Fact]
    public async Task SparseGptWithGptqPrunesAndQuantizesInOneSweep()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string calibration = TokenFile(dir.Path, "calibration.json", 8, 16, 41);
        string eval = TokenFile(dir.Path, "eval.json", 6, 20, 42);
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("joint"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Method = "sparsegpt", Pattern = "2:4",
            Calibration = calibration, EvalData = eval, Quantize = "W4A16", GroupSize = 32, QuantMethod = "gptq",
        };
        var joint = await Runs.RunToEndAsync(fixture.Cluster.Client, spec);
        Assert.True(joint.State == RunState.Completed, joint.Error);
        var dense = PackQuantized.Dequantize(dir.Sub("joint"), dir.Sub("dense"));
        foreach (var (name, values) in dense)
            for (int i = 0; i < values.Length; i += 4)
                Assert.True(values.AsSpan(i, 4).ToArray().Count(v => v == 0) >= 2, $"{name}: group of 4 at {i} keeps more than 2");
        AssertReportsEval(joint, IndependentPerplexity(dir.Sub("dense"), eval));
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("joint"), "shears-report.json")));
        Assert.True(report.RootElement.GetProperty("quantization").GetProperty("joint").GetBoolean());

        // Pruning first and quantizing after (what fine-tuning between them forces) is another computation.
        var apart = await Runs.RunToEndAsync(fixture.Cluster.Client, spec with { OutputPath = dir.Sub("apart"), QuantMethod = "rtn", Calibration = calibration });
        Assert.True(apart.State == RunState.Completed, apart.Error);
        Assert.NotEqual(apart.Rounds[^1].Eval!.Value, joint.Rounds[^1].Eval!.Value);
    }

    /// <summary>Fails the first write of each run's shard 1: the coordinator reloads the shards at the committed last round.</summary>
    private sealed class FailFirstWrite : IStageInterceptor
    {
        private int _armed;
        public int Failures;

        public void Arm() => Volatile.Write(ref _armed, 1);

        public Task BeforeAsync(string shard, StagePlan stage, StageMessage message) => Task.CompletedTask;

        public Task BeforeWriteAsync(string shard)
        {
            if (shard.EndsWith("/1", StringComparison.Ordinal) && Interlocked.Exchange(ref _armed, 0) == 1)
            {
                Interlocked.Increment(ref Failures);
                throw new TimeoutException($"shard {shard} is made to fail its write");
            }
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task AShardLoadedAgainAfterTheLastRoundWritesTheSameGptqOutputFromWhatItPersisted()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        string calibration = TokenFile(dir.Path, "calibration.json", 8, 16, 51);
        var interceptor = new FailFirstWrite();
        await using var cluster = ClusterFixture.Build(2, configure: silo => silo.Services.AddSingleton<IStageInterceptor>(interceptor));
        await cluster.DeployAsync();
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("calm"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer,
            Calibration = calibration, Quantize = "W4A16", GroupSize = 16, QuantMethod = "gptq",
        };
        var calm = await Runs.RunToEndAsync(cluster.Client, spec);
        Assert.True(calm.State == RunState.Completed, calm.Error);
        interceptor.Arm();
        var disturbed = await Runs.RunToEndAsync(cluster.Client, spec with { OutputPath = dir.Sub("disturbed") });
        Assert.True(disturbed.State == RunState.Completed, disturbed.Error);
        Assert.Equal(1, interceptor.Failures);
        Assert.Equal(1, disturbed.Recoveries);
        var files = Directory.GetFiles(dir.Sub("calm"), "*.safetensors");
        Assert.NotEmpty(files);
        foreach (string file in files)
            Assert.True(File.ReadAllBytes(file).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir.Sub("disturbed"), Path.GetFileName(file)))), Path.GetFileName(file));
    }
}
