using System.Text.Json.Nodes;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>Shears' own pack-quantized outputs as --model, dequantized on load, against the dequantizer written here from the format.</summary>
[Collection(ClusterCollection.Name)]
public class ReadBackTests(ClusterFixture fixture)
{
    private static readonly DemoCheckpointOptions Small = QuantizeTests.Small;

    private static byte[] Raw(string checkpoint, string name)
    {
        var m = CheckpointReader.ReadManifest(checkpoint);
        return CheckpointReader.ReadTensor(m, m.Get(name));
    }

    [Theory]
    [InlineData("W4A16", 16)]
    [InlineData("W4A16_ASYM", 32)]
    [InlineData("W8A16", 128)]
    public async Task AQuantizedOutputReadBackIsTheIndependentDequantizationAndPrunesFurther(string scheme, int groupSize)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var quantize = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("q"), Sparsity = 0.5, Quantize = scheme, GroupSize = groupSize };
        var first = await Runs.RunToEndAsync(fixture.Cluster.Client, quantize);
        Assert.True(first.State == RunState.Completed, first.Error);
        var expected = PackQuantized.Dequantize(dir.Sub("q"), dir.Sub("dense"));

        // Evaluated as read: the baseline is the perplexity of the independently dequantized model.
        string eval = QuantizeTests.TokenFile(dir.Path, 6, 20, 5);
        var back = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = dir.Sub("q"), OutputPath = dir.Sub("back"), Sparsity = 0, EvalData = eval });
        Assert.True(back.State == RunState.Completed, back.Error);
        using (var model = LlamaModel.Load(dir.Sub("dense"), torch.CPU))
        {
            double independent = Perplexity.Evaluate(model, EvalData.LoadTokenIds(eval, Small.VocabSize), 4, torch.CPU).Value;
            Assert.True(Math.Abs(back.Baseline!.Value - independent) / independent < 1e-4, $"baseline {back.Baseline!.Value} vs {independent}");
        }
        using (var report = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("back"), "shears-report.json"))))
            Assert.Equal(dir.Sub("q"), report.RootElement.GetProperty("model").GetString());
        Assert.Equal(21, expected.Count);
        foreach (var name in CheckpointReader.ReadManifest(dir.Sub("dense")).Tensors.Select(t => t.Name))
            Assert.True(Raw(dir.Sub("dense"), name).AsSpan().SequenceEqual(Raw(dir.Sub("back"), name)), name);
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("back"), "config.json")))!["quantization_config"]);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("back"), "model.safetensors.index.json")))!["weight_map"]!.AsObject();
        Assert.DoesNotContain(index, kv => kv.Key.EndsWith(".weight_packed") || kv.Key.EndsWith(".weight_scale"));

        // Pruned further, on row blocks over the silos: every kept weight is the dequantized one, and 75% are zero.
        var further = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = dir.Sub("q"), OutputPath = dir.Sub("further"), Sparsity = 0.75, ShardElements = 900 });
        Assert.True(further.State == RunState.Completed, further.Error);
        long zeros = 0, total = 0;
        foreach (var (name, values) in expected)
        {
            var pruned = QuantizeTests.Weights(dir.Sub("further"), name);
            for (int i = 0; i < values.Length; i++)
            {
                if (pruned[i] == 0) zeros++;
                else Assert.Equal(values[i], pruned[i]);
            }
            total += values.Length;
        }
        Assert.True(zeros >= total * 3 / 4, $"{zeros} of {total} zeros");
    }

    /// <summary>An int-quantized W8A16 checkpoint written here (int8 per channel, bf16 scales), as another tool writes one.</summary>
    [Fact]
    public async Task AnIntQuantizedCheckpointReadsAsItsScaledIntegers()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var m = CheckpointReader.ReadManifest(dir.Sub("in"));
        string q = dir.Sub("int8");
        var tensors = new List<(string Name, TensorDType DType, long[] Shape, byte[] Data)>();
        var expected = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var t in m.Tensors)
        {
            var raw = CheckpointReader.ReadTensor(m, t);
            if (!(t.Name.Contains("layers.") && t.Name.EndsWith("_proj.weight"))) { tensors.Add((t.Name, t.DType, t.Shape, raw)); continue; }
            var w = Shears.Pruning.Quantization.QuantizedRows.Widen(raw, t.DType, t.ElementCount, t.Name);
            int rows = (int)t.Shape[0], cols = (int)t.Shape[1];
            var values = new byte[w.Length];
            var scales = new float[rows];
            var dense = new float[w.Length];
            for (int r = 0; r < rows; r++)
            {
                float absmax = 0;
                for (int c = 0; c < cols; c++) absmax = Math.Max(absmax, Math.Abs(w[r * cols + c]));
                scales[r] = FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(absmax == 0 ? 1 : absmax / 127));
                for (int c = 0; c < cols; c++)
                {
                    int v = (int)Math.Clamp(Math.Round(w[r * cols + c] / scales[r]), -128, 127);
                    values[r * cols + c] = (byte)(sbyte)v;
                    dense[r * cols + c] = FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(v * scales[r]));
                }
            }
            var scaleRaw = new byte[rows * 2];
            FloatBits.Store(scales, TensorDType.BF16, scaleRaw);
            string module = t.Name[..^".weight".Length];
            tensors.Add((t.Name, TensorDType.I8, t.Shape, values));
            tensors.Add((module + ".weight_scale", TensorDType.BF16, [rows, 1], scaleRaw));
            expected[t.Name] = dense;
        }
        using (var writer = new SafetensorsWriter(Path.Combine(q, "model.safetensors"), tensors.Select(t => (t.Name, t.DType, t.Shape)).ToArray()))
        {
            foreach (var t in tensors) writer.WriteTensor(t.Name, t.Data);
            writer.Complete();
        }
        foreach (var companion in m.CompanionFiles) File.Copy(m.PathOf(companion), Path.Combine(q, companion));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(q, "config.json")))!.AsObject();
        config["quantization_config"] = JsonNode.Parse("""
            {"quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
             "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": {"num_bits": 8, "type": "int", "dynamic": true, "strategy": "token"},
               "weights": {"num_bits": 8, "type": "int", "symmetric": true, "strategy": "channel", "dynamic": false}}},
             "ignore": ["lm_head"], "kv_cache_scheme": null}
            """);
        File.WriteAllText(Path.Combine(q, "config.json"), config.ToJsonString());

        var back = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = q, OutputPath = dir.Sub("back"), Sparsity = 0 });
        Assert.True(back.State == RunState.Completed, back.Error);
        Assert.Equal(21, expected.Count);
        foreach (var (name, values) in expected) Assert.Equal(values, QuantizeTests.Weights(dir.Sub("back"), name));
        Assert.True(Raw(dir.Sub("in"), "model.norm.weight").AsSpan().SequenceEqual(Raw(dir.Sub("back"), "model.norm.weight")));
    }

    [Theory]
    [InlineData("format", "quantization_config.format")]
    [InlineData("shape", ".weight_packed")]
    public async Task AQuantizedModelThatIsNotReadIsRefusedBeforeTheRun(string broken, string named)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var first = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("q"), Sparsity = 0, Quantize = "W4A16", GroupSize = 16 });
        Assert.True(first.State == RunState.Completed, first.Error);
        string q = dir.Sub("q");
        if (broken == "format")
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(q, "config.json")))!.AsObject();
            config["quantization_config"]!["format"] = "float-quantized";
            File.WriteAllText(Path.Combine(q, "config.json"), config.ToJsonString());
        }
        else
        {
            // weight_shape says 17 more input columns than the packed words hold.
            var m = CheckpointReader.ReadManifest(q);
            var shape = m.Get("model.layers.0.mlp.up_proj.weight_shape");
            using var handle = File.OpenHandle(m.PathOf(shape.FileName), FileMode.Open, FileAccess.ReadWrite);
            var bytes = new byte[8];
            RandomAccess.Read(handle, bytes, shape.FileOffset + 8);
            RandomAccess.Write(handle, BitConverter.GetBytes(BitConverter.ToInt64(bytes) + 17), shape.FileOffset + 8);
        }
        string runId = Guid.NewGuid().ToString("N");
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(runId);
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec { ModelPath = q, OutputPath = dir.Sub("out"), Sparsity = 0.5 }));
        Assert.Contains(named, e.Message);
        Assert.Contains(q, e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")) && Directory.EnumerateFileSystemEntries(dir.Sub("out")).Any());
        Assert.False(Directory.Exists(Path.Combine(Path.GetDirectoryName(dir.Sub("out"))!, $".shears-state-{runId}")));
    }
}
