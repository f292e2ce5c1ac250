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
    private static double MeanCosine(float[][] a, float[][] b) => a.Zip(b, (x, y) =>
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

    [Theory]
    [InlineData("layer")]
    [InlineData("global")]
    public async Task MiniLmWithNeuronsRemovedRunsInOnnxRuntimeAndEmbedsAsTheMaskedModel(string scope)
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        string eval = Path.Combine(dir.Path, "eval.txt");
        var sentences = new[]
        {
            "The harbour was quiet before the storm.", "He wrote three letters and burned two.", "A thin light fell across the kitchen table.",
            "The committee adjourned without a vote.", "Wolves were heard beyond the ridge at night.", "She sold the farm and moved to the city.",
        };
        File.WriteAllLines(eval, sentences);
        string[] Run(string output, params string[] extra) =>
            ["run", "--model", Path.Combine(dir.Sub("in"), "model.onnx"), "--out", dir.Sub(output), "--sparsity", "0.25", "--pattern", "neurons", "--scope", scope, "--eval", eval, .. extra];
        var masked = await ShearsProcess.RunAsync(Run("masked"));
        Assert.True(masked.ExitCode == 0, masked.ToString());
        var removed = await ShearsProcess.RunAsync(Run("removed", "--remove"));
        Assert.True(removed.ExitCode == 0, removed.ToString());

        // Every layer's FFN is narrower by the neurons the report lists; the graph is otherwise the input's.
        var input = OnnxModel.Read(Path.Combine(dir.Sub("in"), "model.onnx"));
        var output = OnnxModel.Read(Path.Combine(dir.Sub("removed"), "model.onnx"));
        var names = Shears.Pruning.Encoders.BertWeightNames.FromOnnx(output);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "shears-report.json")));
        var layers = report.RootElement.GetProperty("removal").GetProperty("layers").EnumerateArray().ToArray();
        Assert.Equal(6, layers.Length);
        int total = 0;
        for (int l = 0; l < 6; l++)
        {
            int lost = layers[l].GetProperty("neurons").GetArrayLength();
            total += lost;
            if (scope == "layer") Assert.Equal(384, lost);
            Assert.Equal([384L, 1536 - lost], output.Initializers.Single(i => i.Name == names.Layers[l].Intermediate).Dims);
            Assert.Equal([1536L - lost], output.Initializers.Single(i => i.Name == names.Layers[l].IntermediateBias).Dims);
            Assert.Equal([1536L - lost, 384], output.Initializers.Single(i => i.Name == names.Layers[l].Output).Dims);
        }
        Assert.Equal(6 * 384, total);
        if (scope == "global") Assert.True(layers.Select(l => l.GetProperty("neurons").GetArrayLength()).Distinct().Count() > 1);
        Assert.Equal(input.Nodes.Count, output.Nodes.Count);
        Assert.True(new FileInfo(Path.Combine(dir.Sub("removed"), "model.onnx")).Length < new FileInfo(Path.Combine(dir.Sub("masked"), "model.onnx")).Length - 6 * 384 * 384 * 4 * 2 * 0.9);

        // ONNX Runtime embeds with the smaller model as with the masked one.
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(Path.Combine(dir.Sub("in"), "vocab.txt"));
        float[][] maskedEmbeddings, removedEmbeddings;
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("masked"), "model.onnx"), 1)) maskedEmbeddings = session.Embed(sentences, tokenizer);
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("removed"), "model.onnx"), 1)) removedEmbeddings = session.Embed(sentences, tokenizer);
        Assert.True(MeanCosine(maskedEmbeddings, removedEmbeddings) >= 0.99999);
        Assert.True(maskedEmbeddings.Zip(removedEmbeddings).All(p => p.First.Zip(p.Second).All(x => Math.Abs(x.First - x.Second) <= 1e-4)));
        // And what the report measured on the masked model is what ONNX Runtime gives for the smaller one.
        float[][] dense;
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("in"), "model.onnx"), 1)) dense = session.Embed(sentences, tokenizer);
        double reported = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(MeanCosine(dense, removedEmbeddings) - reported) < 2e-4, $"fidelity in ONNX Runtime {MeanCosine(dense, removedEmbeddings):F5}, reported {reported:F5}");
    }

    [Fact]
    public async Task MiniLmWithHeadsRemovedRunsInOnnxRuntimeAndTakesFurtherRuns()
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        string eval = Path.Combine(dir.Path, "eval.txt");
        var sentences = new[]
        {
            "The ferry left an hour late in the fog.", "Nobody had read the letter before it was burned.", "The orchard was sold the spring after the flood.",
            "A clerk counted the coins twice and frowned.", "Rain came through the roof of the old mill.", "They argued about the map until dawn.",
        };
        File.WriteAllLines(eval, sentences);
        string[] Run(string model, string output, string scope, params string[] extra) =>
            ["run", "--model", model, "--out", dir.Sub(output), "--sparsity", "0.25", "--pattern", "heads", "--scope", scope, "--eval", eval, .. extra];
        string dense = Path.Combine(dir.Sub("in"), "model.onnx");
        var masked = await ShearsProcess.RunAsync(Run(dense, "masked", "global"));
        Assert.True(masked.ExitCode == 0, masked.ToString());
        var removed = await ShearsProcess.RunAsync(Run(dense, "removed", "global", "--remove"));
        Assert.True(removed.ExitCode == 0, removed.ToString());

        // Each layer keeps its own number of heads: narrower q/k/v (weights and biases) and attention output, and the
        // Reshape constants that split and merge the heads say so.
        string smaller = Path.Combine(dir.Sub("removed"), "model.onnx");
        var output = OnnxModel.Read(smaller);
        var names = Shears.Pruning.Encoders.BertWeightNames.FromOnnx(output);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "shears-report.json")));
        var layers = report.RootElement.GetProperty("removal").GetProperty("layers").EnumerateArray().ToArray();
        var kept = new int[6];
        for (int l = 0; l < 6; l++)
        {
            kept[l] = 12 - layers[l].GetProperty("heads").GetArrayLength();
            long width = kept[l] * 32;
            var layer = names.Layers[l];
            long[] Dims(string name) => output.Initializers.Single(i => i.Name == name).Dims;
            foreach (string weight in new[] { layer.Query, layer.Key, layer.Value }) Assert.Equal([384L, width], Dims(weight));
            foreach (string bias in new[] { layer.QueryBias, layer.KeyBias, layer.ValueBias }) Assert.Equal([width], Dims(bias));
            Assert.Equal([width, 384L], Dims(layer.AttentionOutput));
            Assert.Equal([384L, 1536], Dims(layer.Intermediate));
            var split = Shears.Pruning.Encoders.BertHeadShapes.Find(output, layer.Key)!.Value;
            Assert.Equal(kept[l], BitConverter.ToInt64(output.ReadRawData(split.Heads)));
            Assert.Equal(32, BitConverter.ToInt64(output.ReadRawData(split.HeadDim)));
            Assert.Equal(width, BitConverter.ToInt64(output.ReadRawData(Shears.Pruning.Encoders.BertHeadShapes.FindMerge(output, layer.AttentionOutput)!)));
        }
        Assert.Equal(72 - 18, kept.Sum());
        Assert.True(kept.Distinct().Count() > 1, "global scope: the layers keep different numbers of heads");
        var config = Shears.Pruning.Encoders.BertConfig.FromOnnx(output);
        Assert.Equal((kept[0], 32, 384), (config.NumAttentionHeads, config.HeadDim, config.HiddenSize));

        // ONNX Runtime embeds with the smaller model as with the masked one, and as the report measured.
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(Path.Combine(dir.Sub("in"), "vocab.txt"));
        float[][] Embed(string model)
        {
            using var session = new Shears.Pruning.Encoders.OnnxBertSession(model, 1);
            return session.Embed(sentences, tokenizer);
        }
        var maskedEmbeddings = Embed(Path.Combine(dir.Sub("masked"), "model.onnx"));
        var removedEmbeddings = Embed(smaller);
        Assert.True(MeanCosine(maskedEmbeddings, removedEmbeddings) >= 0.99999);
        Assert.True(maskedEmbeddings.Zip(removedEmbeddings).All(p => p.First.Zip(p.Second).All(x => Math.Abs(x.First - x.Second) <= 1e-4)));
        double reported = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(MeanCosine(Embed(dense), removedEmbeddings) - reported) < 2e-4);

        // The smaller model is a --model like any other: its heads are pruned and removed again, per layer.
        var again = await ShearsProcess.RunAsync(Run(smaller, "again", "layer", "--remove"));
        Assert.True(again.ExitCode == 0, again.ToString());
        var twice = OnnxModel.Read(Path.Combine(dir.Sub("again"), "model.onnx"));
        for (int l = 0; l < 6; l++)
        {
            int left = kept[l] - (int)Math.Round(0.25 * kept[l], MidpointRounding.ToEven);
            Assert.Equal([384L, left * 32], twice.Initializers.Single(i => i.Name == names.Layers[l].Query).Dims);
        }
        using var report2 = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("again"), "shears-report.json")));
        double reported2 = report2.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(MeanCosine(removedEmbeddings, Embed(Path.Combine(dir.Sub("again"), "model.onnx"))) - reported2) < 2e-4);
    }

    [Fact]
    public async Task MiniLmWithTwoLayersRemovedRunsInOnnxRuntimeAsTheLayersSkipped()
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        string dense = Path.Combine(dir.Sub("in"), "model.onnx");
        string eval = Path.Combine(dir.Path, "eval.txt"), calibration = Path.Combine(dir.Path, "calibration.txt");
        var sentences = new[]
        {
            "The lighthouse keeper kept a careful log.", "Two horses grazed by the broken fence.", "The treaty was signed in a cold hall.",
            "Her brother repaired clocks for a living.", "Snow closed the pass for a week.", "The choir sang long after the bells.",
        };
        File.WriteAllLines(eval, sentences);
        File.WriteAllLines(calibration, ["A ship came into the bay at noon.", "The old road ran past the mill and the church.",
            "They counted the votes twice before dawn.", "Bread was cheap that year, and wool dear."]);
        string[] Args(string output, params string[] extra) =>
            ["run", "--model", dense, "--out", dir.Sub(output), "--sparsity", "0.34", "--pattern", "layers", "--calibration", calibration, "--eval", eval, .. extra];

        // Zeroed matrices do not take a post-norm layer out: without --remove the run is refused, and writes nothing.
        var refused = await ShearsProcess.RunAsync(Args("refused"));
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("needs --remove", refused.Stderr);
        Assert.True(!Directory.Exists(Path.Combine(dir.Path, "refused")) || !Directory.EnumerateFileSystemEntries(Path.Combine(dir.Path, "refused")).Any());

        var run = await ShearsProcess.RunAsync(Args("removed", "--remove"));
        Assert.True(run.ExitCode == 0, run.ToString());
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("removed"), "shears-report.json")));
        var round = report.RootElement.GetProperty("rounds")[0];
        var influence = round.GetProperty("blockInfluence").EnumerateArray().Select(v => v.GetDouble()).ToArray();
        Assert.Equal(6, influence.Length);
        var removed = report.RootElement.GetProperty("removal").GetProperty("layers").EnumerateArray()
            .Where(l => l.GetProperty("removed").GetBoolean()).Select(l => l.GetProperty("layer").GetInt32()).ToArray();
        // round_half_to_even(0.34 × 6) = 2 layers, those of the lowest block influence.
        Assert.Equal(influence.Select((v, i) => (v, i)).OrderBy(x => x.v).ThenBy(x => x.i).Take(2).Select(x => x.i).Order(), removed);
        Assert.Equal(4, report.RootElement.GetProperty("removal").GetProperty("config").GetProperty("num_hidden_layers").GetInt32());

        // The output has four layers numbered 0-3, the later ones renamed down, and fewer nodes and bytes.
        string smaller = Path.Combine(dir.Sub("removed"), "model.onnx");
        var input = OnnxModel.Read(dense);
        var output = OnnxModel.Read(smaller);
        var names = Shears.Pruning.Encoders.BertWeightNames.FromOnnx(output);
        Assert.Equal(4, names.Layers.Count);
        Assert.DoesNotContain(output.Initializers, i => i.Name.StartsWith("encoder.layer.4.", StringComparison.Ordinal));
        Assert.True(output.Nodes.Count < input.Nodes.Count - 2 * 80);
        Assert.True(new FileInfo(smaller).Length < new FileInfo(dense).Length - 2 * 1_700_000 * 4);

        // ONNX Runtime computes with it what the dense model computes with the two layers skipped (TorchSharp, op by op).
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(Path.Combine(dir.Sub("in"), "vocab.txt"));
        float[][] actual, full;
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(smaller, 1)) actual = session.Embed(sentences, tokenizer);
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(dense, 1)) full = session.Embed(sentences, tokenizer);
        using var encoder = Shears.Pruning.Encoders.BertEncoder.Load(dense, TorchSharp.torch.CPU);
        foreach (var (sentence, embedding) in sentences.Zip(actual))
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            using var _ = TorchSharp.torch.no_grad();
            var (ids, mask, types) = tokenizer.Encode([sentence]).ToTensors(TorchSharp.torch.CPU);
            var x = encoder.Embeddings.Forward(ids, types);
            for (int l = 0; l < 6; l++) if (!removed.Contains(l)) x = encoder.Layers[l].Forward(x, mask);
            var expected = Shears.Pruning.Encoders.BertEncoder.SentenceEmbeddings(x, mask)[0];
            Assert.True(expected.Zip(embedding).All(p => Math.Abs(p.First - p.Second) <= 1e-4), sentence);
        }
        double reported = round.GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(MeanCosine(full, actual) - reported) < 2e-4, $"fidelity in ONNX Runtime {MeanCosine(full, actual):F5}, reported {reported:F5}");
        Assert.True(reported < 0.99, "two layers fewer change the embeddings");
    }
}
