using Shears.Testing;
using System.Text.Json;
using Shears.Pruning.Checkpoints;

namespace Shears.Client.Tests;

/// <summary>`shears run` on the embedded silo, checked byte for byte against the plain reference.</summary>
public class EndToEndTests
{
    private static JsonElement Report(string outDir) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "shears-report.json"))).RootElement;

    /// <summary>
    /// The run marks itself finished only after its shards are released: with thousands of shards, a client that
    /// stopped its embedded silo at the end used to cut the releases short and print a page of errors per shard.
    /// </summary>
    [Fact]
    public async Task AnEmbeddedRunOfThousandsOfShardsEndsCleanly()
    {
        using var dir = new TempDir();
        var random = new Random(3);
        var data = new byte[5000 * 4 * 4];
        for (int i = 0; i < data.Length; i += 4) BitConverter.TryWriteBytes(data.AsSpan(i), (float)(random.Next(64) - 32));
        ShardedCheckpointWriter.Write(dir.Sub("in"), [("model.layers.0.mlp.up_proj.weight", TensorDType.F32, [5000, 4], data)], 1 << 20,
            new Dictionary<string, string> { ["format"] = "pt" });
        var result = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5", "--shards", "5000");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("fail:", result.Stderr);
        Assert.DoesNotContain("Exception", result.Stderr);
        Assert.Equal(5000, Report(dir.Sub("out")).GetProperty("shards").GetArrayLength());
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), ReferencePruner.Masks(manifest, 0.5, global: true));
    }

    [Theory]
    [InlineData("global", "BF16", null)]
    [InlineData("global", "BF16", "300")]   // tensors split into row blocks: the distributed selection across pieces
    [InlineData("global", "F32", "500")]
    [InlineData("layer", "BF16", null)]
    [InlineData("layer", "F16", "300")]
    public async Task MagnitudeMasksAreExactlyTheSemantics(string scope, string dtype, string? shardElements)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), Enum.Parse<TensorDType>(dtype));
        var args = new List<string> { "run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.37", "--scope", scope };
        if (shardElements is not null) args.AddRange(["--shard-elements", shardElements]);
        var result = await ShearsProcess.RunAsync(args.ToArray());
        Assert.True(result.ExitCode == 0, result.ToString());

        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        var masks = ReferencePruner.Masks(manifest, 0.37, global: scope == "global");
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), masks);

        var report = Report(dir.Sub("out"));
        long n = masks.Values.Sum(m => (long)m.Length);
        Assert.Equal("completed", report.GetProperty("status").GetString());
        Assert.Equal(n, report.GetProperty("prunableWeights").GetInt64());
        var round = Assert.Single(report.GetProperty("rounds").EnumerateArray());
        Assert.Equal(masks.Values.Sum(m => m.LongCount(x => x)), round.GetProperty("maskedWeights").GetInt64());
        foreach (var t in report.GetProperty("tensors").EnumerateArray())
            Assert.Equal(masks[t.GetProperty("name").GetString()!].LongCount(x => x), t.GetProperty("maskedWeights").GetInt64());
        if (shardElements is not null) Assert.True(report.GetProperty("shards").GetArrayLength() > 3);
        else
        {
            // Size accounting: +0.0 elements of the pruned tensors and the bytes of their sparse encoding
            // (8-byte count + 1 bit per element + the non-zero values), per tensor.
            var output = CheckpointReader.ReadManifest(dir.Sub("out"));
            long zeros = 0, sparse = 0;
            foreach (var name in masks.Keys)
            {
                var t = output.Get(name);
                var bytes = CheckpointReader.ReadTensor(output, t);
                int size = t.DType.ElementSize();
                long z = Enumerable.Range(0, (int)t.ElementCount).LongCount(i => bytes.AsSpan(i * size, size).IndexOfAnyExcept((byte)0) < 0);
                zeros += z;
                sparse += 8 + (t.ElementCount + 7) / 8 + (t.ElementCount - z) * size;
            }
            var sizeReport = report.GetProperty("size");
            Assert.Equal(zeros, sizeReport.GetProperty("prunableZeroElements").GetInt64());
            Assert.Equal(sparse, sizeReport.GetProperty("prunableSparseBytes").GetInt64());
            Assert.True(zeros >= masks.Values.Sum(m => m.LongCount(x => x)));
        }
    }

    [Theory]
    [InlineData("global")]
    [InlineData("layer")]
    public async Task CubicRoundsEndWhereOneShotDoes(string scope)
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var result = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.37",
            "--scope", scope, "--schedule", "cubic", "--rounds", "3", "--shard-elements", "700");
        Assert.True(result.ExitCode == 0, result.ToString());
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        ReferencePruner.AssertOutput(dir.Sub("in"), dir.Sub("out"), ReferencePruner.Masks(manifest, 0.37, scope == "global"));

        var rounds = Report(dir.Sub("out")).GetProperty("rounds").EnumerateArray().ToArray();
        Assert.Equal(3, rounds.Length);
        double[] cubic = [0.37 + (0 - 0.37) * Math.Pow(1 - 1.0 / 3, 3), 0.37 + (0 - 0.37) * Math.Pow(1 - 2.0 / 3, 3), 0.37];
        for (int r = 0; r < 3; r++)
        {
            Assert.Equal(r + 1, rounds[r].GetProperty("round").GetInt32());
            Assert.Equal(cubic[r], rounds[r].GetProperty("targetSparsity").GetDouble(), 12);
        }
        Assert.True(rounds[0].GetProperty("maskedWeights").GetInt64() < rounds[1].GetProperty("maskedWeights").GetInt64());
    }

    [Fact]
    public async Task ShearsTimesPrintsEachStepInOrderAndNothingWithoutIt()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Args(string outName) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(outName), "--sparsity", "0.5"];
        var timed = await ShearsProcess.RunWithEnvironmentAsync(new Dictionary<string, string> { ["SHEARS_TIMES"] = "1" }, Args("a"));
        var plain = await ShearsProcess.RunAsync(Args("b"));
        Assert.True(timed.ExitCode == 0 && plain.ExitCode == 0, timed + "\n" + plain);
        var marks = timed.Stderr.Split('\n').Where(l => l.StartsWith("shears-times: ", StringComparison.Ordinal))
            .Select(l => l.Split(' ')).Select(f => (Seconds: double.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture), Step: f[3])).ToArray();
        Assert.Equal(["main", "parsed", "silo-started", "submitted", "finished", "silo-stopped", "exit"], marks.Select(m => m.Step).ToArray());
        Assert.True(marks.Zip(marks.Skip(1)).All(p => p.First.Seconds <= p.Second.Seconds) && marks[0].Seconds > 0, timed.Stderr);
        Assert.DoesNotContain("shears-times", plain.Stderr);
    }

    [Fact]
    public async Task RandomIsSeededAndExactInCount()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Args(string outName, string seed, string shards) =>
            ["run", "--model", dir.Sub("in"), "--out", dir.Sub(outName), "--sparsity", "0.5", "--method", "random", "--seed", seed, "--shard-elements", shards];
        var a = await ShearsProcess.RunAsync(Args("a", "11", "100000"));
        var b = await ShearsProcess.RunAsync(Args("b", "11", "400"));
        var c = await ShearsProcess.RunAsync(Args("c", "12", "100000"));
        Assert.True(a.ExitCode == 0 && b.ExitCode == 0 && c.ExitCode == 0, a + "\n" + b + "\n" + c);
        foreach (string file in Directory.GetFiles(dir.Sub("a"), "*.safetensors").Select(f => Path.GetFileName(f)))
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Sub("a"), file!)), File.ReadAllBytes(Path.Combine(dir.Sub("b"), file!)));
            Assert.NotEqual(File.ReadAllBytes(Path.Combine(dir.Sub("a"), file!)), File.ReadAllBytes(Path.Combine(dir.Sub("c"), file!)));
        }
        var report = Report(dir.Sub("a"));
        long n = report.GetProperty("prunableWeights").GetInt64();
        Assert.Equal((long)Math.Round(0.5 * n, MidpointRounding.ToEven), report.GetProperty("rounds")[0].GetProperty("maskedWeights").GetInt64());
    }

    [Fact]
    public async Task HeadsPatternMasksQueryRowsAndOutputColumns()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), TensorDType.F32);
        var result = await ShearsProcess.RunAsync("run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), "--sparsity", "0.5",
            "--pattern", "heads", "--scope", "layer");
        Assert.True(result.ExitCode == 0, result.ToString());
        var output = CheckpointReader.ReadManifest(dir.Sub("out"));
        int d = TieHeavyCheckpoint.Hidden / TieHeavyCheckpoint.Heads, hidden = TieHeavyCheckpoint.Hidden;
        for (int l = 0; l < TieHeavyCheckpoint.Layers; l++)
        {
            float[] Read(string name) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(
                CheckpointReader.ReadTensor(output, output.Get($"model.layers.{l}.self_attn.{name}.weight"))).ToArray();
            var q = Read("q_proj");
            var o = Read("o_proj");
            var prunedQ = Enumerable.Range(0, TieHeavyCheckpoint.Heads).Where(h => q.Skip(h * d * hidden).Take(d * hidden).All(v => v == 0 && !float.IsNegative(v))).ToArray();
            Assert.Equal(2, prunedQ.Length); // round_half_to_even(0.5 × 4)
            foreach (int h in prunedQ)
                for (int row = 0; row < hidden; row++)
                    for (int col = h * d; col < (h + 1) * d; col++)
                        Assert.True(o[row * hidden + col] == 0 && !float.IsNegative(o[row * hidden + col]), $"layer {l} o_proj[{row},{col}] of pruned head {h} is not +0.0");
        }
    }

    [Fact]
    public async Task LlamaDemoPrunesItsCheckpointInThreeRounds()
    {
        using var dir = new TempDir();
        var result = await ShearsProcess.RunAsync("demo", "--llama", "--out", dir.Path);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("round 3/3", result.Stdout);
        var report = Report(dir.Sub("pruned"));
        var rounds = report.GetProperty("rounds").EnumerateArray().ToArray();
        Assert.Equal(3, rounds.Length);
        Assert.Equal(0.5, rounds[^1].GetProperty("achievedSparsity").GetDouble(), 6);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("model"));
        ReferencePruner.AssertOutput(dir.Sub("model"), dir.Sub("pruned"), ReferencePruner.Masks(manifest, 0.5, global: true));
    }
}
