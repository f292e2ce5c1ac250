using Shears.Contracts;
using Shears.Pruning;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// An ONNX model whose initializers live in an external data file (as every export past 2 GB has them) prunes, evaluates
/// and fine-tunes as the same model with its data inline, and its output keeps the layout: the graph file and the data
/// file, the pruned bytes in the data file at their offsets.
/// </summary>
[Collection(ClusterCollection.Name)]
public class OnnxExternalDataTests(ClusterFixture fixture)
{
    private static readonly string[] Sentences =
    [
        "The whale rose out of the sea.", "A ship sailed past the harbour at dawn.", "She wrote a letter to her sister.",
        "The committee met to discuss the budget.", "Rain fell on the quiet town all night.", "He read the book twice.",
    ];

    [Fact]
    public async Task AModelWithExternalDataPrunesAsTheSameModelInline()
    {
        using var dir = new TempDir();
        var files = MiniLmModel.Extract(dir.Sub("inline"));
        Directory.CreateDirectory(dir.Sub("external"));
        File.Copy(files.VocabularyPath, Path.Combine(dir.Sub("external"), Path.GetFileName(files.VocabularyPath)));
        string external = Path.Combine(dir.Sub("external"), "model.onnx");
        int moved = OnnxExternalizer.Externalize(files.ModelPath, external, "model.onnx_data");
        Assert.True(moved > 36, $"{moved} initializers moved");
        string eval = Path.Combine(dir.Path, "eval.txt"), train = Path.Combine(dir.Path, "train.txt");
        File.WriteAllLines(eval, Sentences);
        File.WriteAllLines(train, Sentences.Reverse());

        var statuses = new List<RunStatus>();
        foreach (var (model, output) in new[] { (files.ModelPath, "out-inline"), (external, "out-external") })
        {
            var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
            {
                ModelPath = model, OutputPath = dir.Sub(output), Sparsity = 0.5, EvalData = eval, FinetuneSteps = 2, FinetuneData = train, Batch = 3,
            });
            Assert.True(status.State == RunState.Completed, status.Error);
            statuses.Add(status);
        }
        Assert.Equal(statuses[0].Rounds[^1].MaskedWeights, statuses[1].Rounds[^1].MaskedWeights);
        Assert.Equal(statuses[0].Baseline!.Value, statuses[1].Baseline!.Value);
        Assert.Equal(statuses[0].Rounds[^1].Eval!.Value, statuses[1].Rounds[^1].Eval!.Value);

        // The output is the input's layout: graph file and data file; every tensor's bytes as the inline run wrote them.
        Assert.True(File.Exists(Path.Combine(dir.Sub("out-external"), "model.onnx_data")));
        Assert.Equal(new FileInfo(external).Length, new FileInfo(Path.Combine(dir.Sub("out-external"), "model.onnx")).Length);
        var inline = ModelFiles.ReadManifest(Path.Combine(dir.Sub("out-inline"), "model.onnx"));
        var split = ModelFiles.ReadManifest(Path.Combine(dir.Sub("out-external"), "model.onnx"));
        Assert.Equal(inline.Tensors.Select(t => t.Name).Order(), split.Tensors.Select(t => t.Name).Order());
        Assert.Contains(split.Tensors, t => t.FileName == "model.onnx_data");
        foreach (var t in inline.Tensors)
            Assert.Equal(CheckpointReader.ReadTensor(inline, t), CheckpointReader.ReadTensor(split, split.Get(t.Name)));
        var pruned = split.Tensors.Where(t => t.FileName == "model.onnx_data" && t.Shape.Length == 2).ToArray();
        Assert.Contains(pruned, t => CheckpointReader.ReadTensor(split, t).Chunk(4).Count(c => c.All(b => b == 0)) * 2 >= t.ElementCount);

        // ONNX Runtime loads the output with its data file and computes what it computes for the inline output.
        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(files.VocabularyPath, maxLength: 128);
        using var a = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("out-inline"), "model.onnx"), threads: 1);
        using var b = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("out-external"), "model.onnx"), threads: 1);
        var ea = a.Embed(Sentences, tokenizer);
        var eb = b.Embed(Sentences, tokenizer);
        for (int i = 0; i < Sentences.Length; i++) Assert.Equal(ea[i], eb[i]);
    }

    [Fact]
    public async Task ADataFileShorterThanItsTensorsIsRefusedNamingTheTensor()
    {
        using var dir = new TempDir();
        var files = MiniLmModel.Extract(dir.Sub("inline"));
        Directory.CreateDirectory(dir.Sub("external"));
        string external = Path.Combine(dir.Sub("external"), "model.onnx"), data = Path.Combine(dir.Sub("external"), "model.onnx_data");
        OnnxExternalizer.Externalize(files.ModelPath, external, "model.onnx_data");
        using (var stream = new FileStream(data, FileMode.Open)) stream.SetLength(stream.Length - 100);
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec { ModelPath = external, OutputPath = dir.Sub("out"), Sparsity = 0.5 }));
        Assert.Contains("lies past the end of 'model.onnx_data'", e.Message);
        Assert.Contains(external, e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }

    /// <summary>
    /// --quantize and --remove rewrite the graph; a model with external data keeps it external: the output is the graph
    /// and one data file holding only what the new graph reads, and every tensor, and ONNX Runtime's embeddings, are
    /// the same as for the model with its data inline.
    /// </summary>
    [Theory]
    [InlineData("W8A8", null)]
    [InlineData("W4A16", null)]
    [InlineData(null, "neurons")]
    [InlineData("W8A8", "heads")]
    [InlineData(null, "layers")] // whole layers out: initializers dropped, the later layers' renamed
    public async Task QuantizingOrRemovingKeepsTheDataExternalAndEqualsTheInlineRun(string? quantize, string? removed)
    {
        using var dir = new TempDir();
        var files = MiniLmModel.Extract(dir.Sub("inline"));
        Directory.CreateDirectory(dir.Sub("external"));
        string external = Path.Combine(dir.Sub("external"), "model.onnx");
        OnnxExternalizer.Externalize(files.ModelPath, external, "model.onnx_data");
        File.Copy(files.VocabularyPath, Path.Combine(dir.Sub("external"), Path.GetFileName(files.VocabularyPath)));
        string calibration = Path.Combine(dir.Path, "calibration.txt");
        File.WriteAllLines(calibration, Sentences);
        foreach (var (model, output) in new[] { (files.ModelPath, "out-inline"), (external, "out-external") })
        {
            var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
            {
                ModelPath = model, OutputPath = dir.Sub(output), Sparsity = 0.25, Quantize = quantize, Remove = removed is not null,
                Pattern = removed ?? "unstructured", Scope = removed is null or "layers" ? "global" : "layer",
                Calibration = removed == "layers" ? calibration : null,
            });
            Assert.True(status.State == RunState.Completed, status.Error);
        }

        string outModel = Path.Combine(dir.Sub("out-external"), "model.onnx"), outData = Path.Combine(dir.Sub("out-external"), "model.onnx_data");
        Assert.Equal(["model.onnx", "model.onnx_data"], Directory.GetFiles(dir.Sub("out-external")).Select(f => Path.GetFileName(f))
            .Where(f => f.StartsWith("model", StringComparison.Ordinal) || f.StartsWith('.')).Order(StringComparer.Ordinal).ToArray());
        var inline = ModelFiles.ReadManifest(Path.Combine(dir.Sub("out-inline"), "model.onnx"));
        var split = ModelFiles.ReadManifest(outModel);
        Assert.Equal(inline.Tensors.Select(t => t.Name).Order(), split.Tensors.Select(t => t.Name).Order());
        foreach (var t in inline.Tensors)
            Assert.Equal(CheckpointReader.ReadTensor(inline, t), CheckpointReader.ReadTensor(split, split.Get(t.Name)));
        // The data file holds the external tensors only, each at an aligned offset: no dead bytes of the replaced weights.
        var inData = split.Tensors.Where(t => t.FileName == "model.onnx_data").ToArray();
        Assert.NotEmpty(inData);
        Assert.All(inData, t => Assert.Equal(0, t.FileOffset % 4096));
        Assert.True(new FileInfo(outData).Length <= inData.Sum(t => (t.ByteLength + 4095) / 4096 * 4096));
        Assert.True(new FileInfo(outData).Length < new FileInfo(Path.Combine(dir.Sub("external"), "model.onnx_data")).Length);

        var tokenizer = Shears.Pruning.Encoders.BertTextTokenizer.Create(files.VocabularyPath, maxLength: 128);
        using var a = new Shears.Pruning.Encoders.OnnxBertSession(Path.Combine(dir.Sub("out-inline"), "model.onnx"), threads: 1);
        using var b = new Shears.Pruning.Encoders.OnnxBertSession(outModel, threads: 1);
        var ea = a.Embed(Sentences, tokenizer);
        var eb = b.Embed(Sentences, tokenizer);
        for (int i = 0; i < Sentences.Length; i++) Assert.Equal(ea[i], eb[i]);
    }

    [Theory]
    [InlineData("../outside.bin", "outside")]
    [InlineData("/etc/passwd", "outside")]
    [InlineData("missing.bin", "missing.bin")]
    public async Task ExternalDataOutsideTheModelsFolderOrMissingIsRefusedNamingIt(string location, string expected)
    {
        using var dir = new TempDir();
        var files = MiniLmModel.Extract(dir.Sub("inline"));
        Directory.CreateDirectory(dir.Sub("external"));
        string external = Path.Combine(dir.Sub("external"), "model.onnx");
        OnnxExternalizer.Externalize(files.ModelPath, external, "model.onnx_data");
        // Point every reference elsewhere (same length, so the protobuf framing holds when the names are as long).
        var bytes = File.ReadAllBytes(external);
        var from = System.Text.Encoding.UTF8.GetBytes("model.onnx_data");
        var to = System.Text.Encoding.UTF8.GetBytes(location.PadRight(from.Length, '_')[..from.Length]);
        string actual = System.Text.Encoding.UTF8.GetString(to);
        for (int i = 0; i + from.Length <= bytes.Length; i++)
            if (bytes.AsSpan(i, from.Length).SequenceEqual(from)) to.CopyTo(bytes, i);
        File.WriteAllBytes(external, bytes);

        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(new RunSpec { ModelPath = external, OutputPath = dir.Sub("out"), Sparsity = 0.5 }));
        Assert.Contains(actual, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }

    /// <summary>Links are judged by where they really lead, the model folder's own parents' links followed too.</summary>
    [Fact]
    public void LinksAreJudgedByWhereTheyReallyLead()
    {
        using var dir = new TempDir();
        var files = MiniLmModel.Extract(dir.Sub("inline"));

        // The data file a link (by absolute path) to a file beside it, the folder reached through a linked parent: accepted.
        string model = Path.Combine(dir.Sub("real"), "model");
        Directory.CreateDirectory(model);
        OnnxExternalizer.Externalize(files.ModelPath, Path.Combine(model, "model.onnx"), "model.onnx_data");
        File.Move(Path.Combine(model, "model.onnx_data"), Path.Combine(model, "blob.bin"));
        File.CreateSymbolicLink(Path.Combine(model, "model.onnx_data"), Path.Combine(model, "blob.bin"));
        Directory.CreateSymbolicLink(dir.Sub("alias"), dir.Sub("real"));
        var manifest = OnnxCheckpoint.ReadManifest(Path.Combine(dir.Sub("alias"), "model", "model.onnx"));
        Assert.Contains(manifest.Files, f => f.FileName == "model.onnx_data");

        // The data file in a subfolder that is a link out of the model's folder: refused, naming where it leads.
        Directory.CreateDirectory(dir.Sub("outside"));
        Directory.CreateDirectory(dir.Sub("two"));
        Directory.CreateSymbolicLink(Path.Combine(dir.Sub("two"), "sub"), dir.Sub("outside"));
        OnnxExternalizer.Externalize(files.ModelPath, Path.Combine(dir.Sub("two"), "model.onnx"), "sub/model.bin");
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxCheckpoint.ReadManifest(Path.Combine(dir.Sub("two"), "model.onnx")));
        Assert.Contains("'sub/model.bin'", e.Message);
        Assert.Contains(Path.Combine(dir.Sub("outside"), "model.bin") + ", outside the model's folder", e.Message);
    }
}
