using System.Text.Json;
using Shears.Pruning.Onnx;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>`shears run` on the real all-MiniLM-L6-v2 ONNX model.</summary>
public class OnnxRunTests
{
    [Fact]
    public async Task GlobalMagnitudeOnMiniLmMasksExactlyTheDocumentedWeightsAndNothingElse()
    {
        using var dir = new TempDir();
        var written = await ShearsProcess.RunAsync("minilm", dir.Sub("in"));
        Assert.True(written.ExitCode == 0, written.ToString());
        var result = await ShearsProcess.RunAsync("run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", dir.Sub("out"),
            "--sparsity", "0.5", "--scope", "global", "--shard-elements", "1000000");
        Assert.True(result.ExitCode == 0, result.ToString());

        var model = OnnxModel.Read(Path.Combine(dir.Sub("in"), "model.onnx"));
        var prunable = model.FindPrunable().OrderBy(p => p.Initializer.Name, StringComparer.Ordinal).ToArray();
        Assert.Equal(36, prunable.Length);

        // The reference: every |w| of the 36 matrices with its global position, sorted, the first half masked.
        var data = prunable.Select(p => model.ReadRawData(p.Initializer.Name)).ToArray();
        long total = data.Sum(d => (long)d.Length / 4);
        var keys = new ulong[total];
        long at = 0;
        foreach (var bytes in data)
            for (int i = 0; i < bytes.Length / 4; i++, at++)
                keys[at] = ((ulong)(BitConverter.ToUInt32(bytes, i * 4) & 0x7FFFFFFF) << 32) | (ulong)at;
        Array.Sort(keys);
        long k = (long)Math.Round(0.5 * total, MidpointRounding.ToEven);
        var expected = File.ReadAllBytes(Path.Combine(dir.Sub("in"), "model.onnx"));
        var starts = new long[prunable.Length + 1];
        for (int i = 0; i < prunable.Length; i++) starts[i + 1] = starts[i] + data[i].Length / 4;
        for (long j = 0; j < k; j++)
        {
            long position = (long)(keys[j] & 0xFFFFFFFF);
            int tensor = Array.FindLastIndex(starts, s => s <= position);
            long offset = prunable[tensor].Initializer.RawDataOffset!.Value + (position - starts[tensor]) * 4;
            Array.Clear(expected, (int)offset, 4);
        }
        var actual = File.ReadAllBytes(Path.Combine(dir.Sub("out"), "model.onnx"));
        Assert.Equal(expected.Length, actual.Length);
        Assert.True(expected.AsSpan().SequenceEqual(actual), "the pruned model differs from the reference");
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Sub("in"), "vocab.txt")), File.ReadAllBytes(Path.Combine(dir.Sub("out"), "vocab.txt")));

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        Assert.Equal(total, report.RootElement.GetProperty("prunableWeights").GetInt64());
        Assert.Equal(36, report.RootElement.GetProperty("tensors").GetArrayLength());
    }

    [Fact]
    public async Task RowsOfAnOnnxMatMulWeightAreItsOutputNeurons()
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        var result = await ShearsProcess.RunAsync("run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", dir.Sub("out"),
            "--sparsity", "0.25", "--pattern", "rows", "--scope", "layer");
        Assert.True(result.ExitCode == 0, result.ToString());
        var model = OnnxModel.Read(Path.Combine(dir.Sub("out"), "model.onnx"));
        foreach (var p in model.FindPrunable())
        {
            // Stored [in, out]: an output neuron is a column; a quarter of the columns are all +0.0, no row is.
            var floats = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(model.ReadRawData(p.Initializer.Name)).ToArray();
            long rows = p.Initializer.Dims[0], cols = p.Initializer.Dims[1];
            int zeroColumns = Enumerable.Range(0, (int)cols).Count(c => Enumerable.Range(0, (int)rows).All(r => floats[r * cols + c] == 0));
            Assert.True(p.OutputIsColumn);
            Assert.Equal((int)Math.Round(0.25 * cols, MidpointRounding.ToEven), zeroColumns);
        }
    }

    [Fact]
    public async Task TwoFourMagnitudeGroupsEachOutputsInputFeatures()
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        var result = await ShearsProcess.RunAsync("run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", dir.Sub("out"),
            "--sparsity", "0.5", "--pattern", "2:4", "--scope", "layer");
        Assert.True(result.ExitCode == 0, result.ToString());
        var input = OnnxModel.Read(Path.Combine(dir.Sub("in"), "model.onnx"));
        var model = OnnxModel.Read(Path.Combine(dir.Sub("out"), "model.onnx"));
        foreach (var p in model.FindPrunable())
        {
            // Stored [in, out]: a group is 4 consecutive input features (rows) of one output (column), as Wanda's and
            // SparseGPT's groups on this model and as a sparse kernel reduces; in each, the two smallest |w| are +0.0.
            var before = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(input.ReadRawData(p.Initializer.Name)).ToArray();
            var after = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(model.ReadRawData(p.Initializer.Name)).ToArray();
            long rows = p.Initializer.Dims[0], cols = p.Initializer.Dims[1];
            for (long c = 0; c < cols; c++)
                for (long g = 0; g < rows; g += 4)
                {
                    var order = Enumerable.Range(0, 4).OrderBy(j => Math.Abs(before[(g + j) * cols + c])).ThenBy(j => j).ToArray();
                    for (int j = 0; j < 4; j++)
                        Assert.True((after[(g + order[j]) * cols + c] == 0) == (j < 2), $"{p.Initializer.Name} column {c} rows {g}..{g + 3}");
                }
        }
    }
}

/// <summary>Calibration-aware pruning of the real encoder, layer by layer through the pipeline.</summary>
public class OnnxCalibrationTests
{
    [Fact]
    public async Task SparseGptAndWandaKeepMiniLmCloserToItsDenseSelfThanMagnitude()
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        var rows = File.ReadLines(Path.Combine(AppContext.BaseDirectory, "data", "bible-ot-sample-2000.tsv")).Select(l => l.Split('\t')).ToArray();
        string eval = Path.Combine(dir.Path, "eval.txt"), calibration = Path.Combine(dir.Path, "calibration.txt");
        File.WriteAllLines(eval, rows.Where((_, i) => i % 20 == 0).Select(c => c[2]));          // WEB verses
        File.WriteAllLines(calibration, rows.Where((_, i) => i % 20 == 10).Select(c => c[1]));  // KJV verses of other chapters
        var fidelity = new Dictionary<string, double>();
        foreach (string method in new[] { "magnitude", "wanda", "sparsegpt" })
        {
            string output = dir.Sub(method);
            var args = new List<string> { "run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", output, "--sparsity", "0.5",
                "--scope", "layer", "--method", method, "--eval", eval };
            if (method != "magnitude") args.AddRange(["--calibration", calibration, "--calibration-samples", "64"]);
            var result = await ShearsProcess.RunAsync(args.ToArray());
            Assert.True(result.ExitCode == 0, result.ToString());
            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "shears-report.json")));
            fidelity[method] = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();

            // ONNX Runtime loads the result; every matrix holds at least half +0.0 (Wanda: per output neuron).
            using var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(output, "model.onnx"));
            var model = OnnxModel.Read(Path.Combine(output, "model.onnx"));
            foreach (var p in model.FindPrunable())
            {
                var w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(model.ReadRawData(p.Initializer.Name)).ToArray();
                long ins = p.Initializer.Dims[0], outs = p.Initializer.Dims[1];
                if (method == "wanda")
                    for (long o = 0; o < outs; o++)
                        Assert.True(Enumerable.Range(0, (int)ins).Count(i => w[i * outs + o] == 0) >= ins / 2, $"{p.Module} output {o}");
                else
                    Assert.True(w.LongCount(v => v == 0) >= w.Length / 2, p.Module);
            }
        }
        Assert.True(fidelity["sparsegpt"] > fidelity["magnitude"] + 0.1, string.Join(", ", fidelity));
        Assert.True(fidelity["wanda"] > fidelity["magnitude"] + 0.05, string.Join(", ", fidelity));
    }
}

/// <summary>`shears run --quantize` on all-MiniLM-L6-v2: the rewritten model runs in ONNX Runtime.</summary>
public class OnnxQuantizeTests
{
    internal static double MeanCosine(float[][] a, float[][] b) => a.Zip(b, (x, y) =>
        x.Zip(y, (p, q) => (double)p * q).Sum() / Math.Sqrt(x.Sum(p => (double)p * p) * y.Sum(q => (double)q * q))).Average();

    [Theory]
    [InlineData("W4A16", 2e-4, 0.14)]
    [InlineData("W8A8", 0.05, 0.26)]
    public async Task QuantizedMiniLmRunsInOnnxRuntimeAsTheReportMeasured(string scheme, double tolerance, double byteRatio)
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        string eval = Path.Combine(dir.Path, "eval.txt");
        var sentences = new[]
        {
            "The harbour was quiet before the storm.", "He wrote three letters and burned two.", "A thin light fell across the kitchen table.",
            "The committee adjourned without a vote.", "Wolves were heard beyond the ridge at night.", "She sold the farm and moved to the city.",
            "Prices rose sharply in the spring.", "The engine coughed twice and started.",
        };
        File.WriteAllLines(eval, sentences);
        var result = await ShearsProcess.RunAsync("run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", dir.Sub("out"),
            "--sparsity", "0.3", "--quantize", scheme, "--eval", eval);
        Assert.True(result.ExitCode == 0, result.ToString());

        var input = OnnxModel.Read(Path.Combine(dir.Sub("in"), "model.onnx"));
        var output = OnnxModel.Read(Path.Combine(dir.Sub("out"), "model.onnx"));
        Assert.Equal(36, output.Nodes.Count(n => n.OpType == (scheme == "W8A8" ? "MatMulInteger" : "MatMulNBits")));
        long before = input.FindPrunable().Sum(p => p.Initializer.RawDataLength!.Value);
        long after = output.Initializers.Where(i => i.Name.EndsWith("_quantized") || i.Name.EndsWith("_scale") || i.Name.EndsWith("_zero_point")).Sum(i => i.RawDataLength ?? 0);
        Assert.InRange((double)after / before, 0.01, byteRatio);

        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(Path.Combine(dir.Sub("in"), "vocab.txt"));
        float[][] dense, quantized;
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("in"), "model.onnx"), 1)) dense = session.Embed(sentences, tokenizer);
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("out"), "model.onnx"), 1)) quantized = session.Embed(sentences, tokenizer);
        double fidelity = MeanCosine(dense, quantized);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        double reported = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        // W4A16: ONNX Runtime computes with the very weights the stages evaluated; W8A8 also quantizes activations at run time.
        Assert.True(Math.Abs(fidelity - reported) < tolerance, $"{scheme}: fidelity in ONNX Runtime {fidelity:F5}, reported {reported:F5}");
        Assert.Equal(scheme, report.RootElement.GetProperty("quantization").GetProperty("scheme").GetString());
        Assert.True(report.RootElement.GetProperty("size").GetProperty("outputRatio").GetDouble() < 0.7);
    }
}
