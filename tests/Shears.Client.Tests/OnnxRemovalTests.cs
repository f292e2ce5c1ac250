using System.Text.Json;
using Shears.Pruning.Onnx;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>`shears run --remove` on all-MiniLM-L6-v2: FFN neurons, heads and whole layers leave the graph, and ONNX Runtime runs what is left.</summary>
public class OnnxRemovalTests
{
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
        Assert.True(OnnxQuantizeTests.MeanCosine(maskedEmbeddings, removedEmbeddings) >= 0.99999);
        Assert.True(maskedEmbeddings.Zip(removedEmbeddings).All(p => p.First.Zip(p.Second).All(x => Math.Abs(x.First - x.Second) <= 1e-4)));
        // And what the report measured on the masked model is what ONNX Runtime gives for the smaller one.
        float[][] dense;
        using (var session = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("in"), "model.onnx"), 1)) dense = session.Embed(sentences, tokenizer);
        double reported = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(OnnxQuantizeTests.MeanCosine(dense, removedEmbeddings) - reported) < 2e-4, $"fidelity in ONNX Runtime {OnnxQuantizeTests.MeanCosine(dense, removedEmbeddings):F5}, reported {reported:F5}");
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
        Assert.True(OnnxQuantizeTests.MeanCosine(maskedEmbeddings, removedEmbeddings) >= 0.99999);
        Assert.True(maskedEmbeddings.Zip(removedEmbeddings).All(p => p.First.Zip(p.Second).All(x => Math.Abs(x.First - x.Second) <= 1e-4)));
        double reported = report.RootElement.GetProperty("rounds")[0].GetProperty("eval").GetProperty("value").GetDouble();
        Assert.True(Math.Abs(OnnxQuantizeTests.MeanCosine(Embed(dense), removedEmbeddings) - reported) < 2e-4);

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
        Assert.True(Math.Abs(OnnxQuantizeTests.MeanCosine(removedEmbeddings, Embed(Path.Combine(dir.Sub("again"), "model.onnx"))) - reported2) < 2e-4);
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
        Assert.True(Math.Abs(OnnxQuantizeTests.MeanCosine(full, actual) - reported) < 2e-4, $"fidelity in ONNX Runtime {OnnxQuantizeTests.MeanCosine(full, actual):F5}, reported {reported:F5}");
        Assert.True(reported < 0.99, "two layers fewer change the embeddings");
    }

    /// <summary>
    /// One run of --remove --quantize writes the model.onnx that removing and then quantizing in a second run writes,
    /// and its last evaluation (measured on the smaller, dequantized model) is the second run's.
    /// </summary>
    [Theory]
    [InlineData("neurons", "W8A8")]
    [InlineData("heads", "W4A16")]
    [InlineData("layers", "W4A16")]
    public async Task MiniLmRemovedAndQuantizedInOneRunIsTheTwoRunsModel(string pattern, string scheme)
    {
        using var dir = new TempDir();
        Assert.Equal(0, (await ShearsProcess.RunAsync("minilm", dir.Sub("in"))).ExitCode);
        string eval = Path.Combine(dir.Path, "eval.txt"), calibration = Path.Combine(dir.Path, "calibration.txt");
        File.WriteAllLines(eval, ["The lighthouse keeper kept a careful log.", "Two horses grazed by the broken fence.",
            "The treaty was signed in a cold hall.", "Snow closed the pass for a week."]);
        File.WriteAllLines(calibration, ["A ship came into the bay at noon.", "They counted the votes twice before dawn."]);
        string[] Run(string model, string output, params string[] extra) => ["run", "--model", model, "--out", dir.Sub(output), "--eval", eval, .. extra];
        string[] removal = pattern == "layers"
            ? ["--sparsity", "0.17", "--pattern", "layers", "--calibration", calibration, "--remove"]
            : ["--sparsity", "0.25", "--pattern", pattern, "--scope", "layer", "--remove"];
        var first = await ShearsProcess.RunAsync(Run(Path.Combine(dir.Sub("in"), "model.onnx"), "removed", removal));
        Assert.True(first.ExitCode == 0, first.ToString());
        var second = await ShearsProcess.RunAsync(Run(Path.Combine(dir.Sub("removed"), "model.onnx"), "two", "--sparsity", "0", "--quantize", scheme));
        Assert.True(second.ExitCode == 0, second.ToString());
        var one = await ShearsProcess.RunAsync(Run(Path.Combine(dir.Sub("in"), "model.onnx"), "one", [.. removal, "--quantize", scheme]));
        Assert.True(one.ExitCode == 0, one.ToString());
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Sub("two"), "model.onnx")), File.ReadAllBytes(Path.Combine(dir.Sub("one"), "model.onnx")));
        Assert.Contains(OnnxModel.Read(Path.Combine(dir.Sub("one"), "model.onnx")).Nodes, n => n.OpType == (scheme == "W8A8" ? "MatMulInteger" : "MatMulNBits"));
        if (pattern == "layers")
            Assert.Equal(5, OnnxModel.Read(Path.Combine(dir.Sub("one"), "model.onnx")).Initializers
                .Select(i => System.Text.RegularExpressions.Regex.Match(i.Name, @"^encoder\.layer\.(\d+)\.")).Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct().Count());

        // The last evaluation measured the written model: ONNX Runtime's embeddings of it against the dense model's give
        // the reported fidelity (within what W8A8's dynamically quantized activations add, as for quantization alone).
        double Last(string output)
        {
            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub(output), "shears-report.json")));
            return report.RootElement.GetProperty("rounds").EnumerateArray().Last().GetProperty("eval").GetProperty("value").GetDouble();
        }
        var sentences = File.ReadAllLines(eval);
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(Path.Combine(dir.Sub("in"), "vocab.txt"));
        float[][] Embed(string model)
        {
            using var session = new Shears.Pruning.Encoders.OnnxBertSession(model, 1);
            return session.Embed(sentences, tokenizer);
        }
        double measured = OnnxQuantizeTests.MeanCosine(Embed(Path.Combine(dir.Sub("in"), "model.onnx")), Embed(Path.Combine(dir.Sub("one"), "model.onnx")));
        double reported = Last("one");
        Assert.True(Math.Abs(measured - reported) < (scheme == "W8A8" ? 0.05 : 2e-4), $"fidelity in ONNX Runtime {measured:F5}, reported {reported:F5}");
        Assert.NotEqual(Last("removed"), reported);
    }
}
