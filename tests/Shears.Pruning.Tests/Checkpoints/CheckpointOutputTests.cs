using Shears.Pruning.Checkpoints;
using static Shears.Pruning.Tests.Checkpoints.RawSafetensors;

namespace Shears.Pruning.Tests.Checkpoints;

public class CheckpointOutputTests
{
    private static DemoCheckpointOptions Small(long maxShardBytes) =>
        new(HiddenSize: 64, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 160, VocabSize: 128, MaxShardBytes: maxShardBytes);

    [Theory]
    [InlineData(40_000L, true)]
    [InlineData(100_000_000L, false)]
    public void LayoutPlusCopyOfEveryTensorReproducesTheInputExactly(long maxShardBytes, bool sharded)
    {
        using var dir = new TempDir();
        var input = dir.Sub("in");
        var output = dir.Sub("out");
        DemoCheckpoint.Write(input, Small(maxShardBytes));
        File.WriteAllText(Path.Combine(input, "tokenizer.json"), "{\"model\":{}}");
        var m = CheckpointReader.ReadManifest(input);
        Assert.Equal(sharded, m.IndexFileName is not null);
        Assert.Equal(sharded, m.Files.Count > 1);

        CheckpointOutput.CreateLayout(m, output);

        foreach (var file in m.Files)
        {
            var copy = Path.Combine(output, file.FileName);
            Assert.Equal(file.FileLength, new FileInfo(copy).Length);
            Assert.Equal(File.ReadAllBytes(m.PathOf(file.FileName))[..(int)file.HeaderBytes], File.ReadAllBytes(copy)[..(int)file.HeaderBytes]);
        }
        var laidOut = CheckpointReader.ReadManifest(output);
        Assert.Equal(m.Tensors, laidOut.Tensors, (a, b) => a.Name == b.Name && a.FileOffset == b.FileOffset && a.ByteLength == b.ByteLength && a.FileName == b.FileName);

        foreach (var t in m.Tensors)
        {
            CheckpointOutput.CopyTensor(m, t, output);
        }

        var inputFiles = Directory.GetFiles(input).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        var outputFiles = Directory.GetFiles(output).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(inputFiles, outputFiles);
        Assert.Contains("config.json", outputFiles);
        Assert.Contains("tokenizer.json", outputFiles);
        foreach (var name in inputFiles)
        {
            Assert.True(File.ReadAllBytes(Path.Combine(input, name!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(output, name!))), name);
        }
    }

    /// <summary>A one-file demo checkpoint in dir/in and its output layout in dir/out.</summary>
    private static (CheckpointManifest Input, string Output) LaidOut(TempDir dir)
    {
        DemoCheckpoint.Write(dir.Sub("in"), Small(100_000_000));
        var m = CheckpointReader.ReadManifest(dir.Sub("in"));
        CheckpointOutput.CreateLayout(m, dir.Sub("out"));
        return (m, dir.Sub("out"));
    }

    /// <summary>
    /// Between two file systems (a checkpoint in memory-backed /dev/shm, the output on disk) the kernel refuses
    /// copy_file_range (EXDEV on current Linux) and the buffered copy takes over: the same bytes either way.
    /// </summary>
    [Fact]
    public void CopiesAcrossFileSystemsAreExact()
    {
        using var dir = new TempDir();
        string shm = Directory.Exists("/dev/shm") ? Path.Combine("/dev/shm", "shears-" + Guid.NewGuid().ToString("N")) : dir.Sub("same-fs");
        try
        {
            DemoCheckpoint.Write(shm, Small(40_000));
            var m = CheckpointReader.ReadManifest(shm);
            var output = dir.Sub("out");
            CheckpointOutput.CreateLayout(m, output);
            foreach (var t in m.Tensors) CheckpointOutput.CopyTensor(m, t, output);
            foreach (var file in m.Files)
                Assert.True(File.ReadAllBytes(m.PathOf(file.FileName)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(output, file.FileName))), file.FileName);
        }
        finally
        {
            if (shm.StartsWith("/dev/shm/", StringComparison.Ordinal)) Directory.Delete(shm, recursive: true);
        }
    }

    [Fact]
    public void CopyFromATruncatedFileNamesTheFileAndTheTensorAndWritesNothing()
    {
        using var dir = new TempDir();
        var (m, output) = LaidOut(dir);
        var last = m.Tensors.MaxBy(t => t.FileOffset)!;
        var path = m.PathOf(last.FileName);
        using (var file = File.OpenHandle(path, FileMode.Open, FileAccess.Write)) RandomAccess.SetLength(file, last.FileOffset + last.ByteLength - 1);
        var e = Assert.Throws<CheckpointFormatException>(() => CheckpointOutput.CopyTensor(m, last, output));
        Assert.Contains(path, e.Message);
        Assert.Contains(last.Name, e.Message);
        var written = File.ReadAllBytes(Path.Combine(output, last.FileName)).AsSpan((int)last.FileOffset, (int)last.ByteLength);
        Assert.False(written.ContainsAnyExcept((byte)0));
    }

    [Fact]
    public void ConcurrentRowBlockWritesFillOneFile()
    {
        using var dir = new TempDir();
        var (m, output) = LaidOut(dir);
        var up = m.Get("model.layers.0.mlp.up_proj.weight");
        var down = m.Get("model.layers.1.mlp.down_proj.weight");

        // Row blocks of two tensors written in parallel, as shard grains on several silos do.
        var blocks = Enumerable.Range(0, (int)up.RowCount).Select(r => (Tensor: up, Row: r))
            .Concat(Enumerable.Range(0, (int)down.RowCount).Select(r => (Tensor: down, Row: r)));
        Parallel.ForEach(blocks, block =>
        {
            var row = new byte[block.Tensor.RowByteLength];
            Array.Fill(row, (byte)(block.Row + 1));
            CheckpointOutput.WriteTensorRange(output, block.Tensor, block.Row * block.Tensor.RowByteLength, row);
        });
        var gate = m.Get("model.layers.0.mlp.gate_proj.weight");
        var gateBytes = RandomBytes((int)gate.ByteLength, 3);
        CheckpointOutput.WriteTensor(output, gate, gateBytes);

        var result = CheckpointReader.ReadManifest(output);
        foreach (var t in new[] { up, down })
        {
            var bytes = CheckpointReader.ReadTensor(result, result.Get(t.Name));
            for (var r = 0; r < t.RowCount; r++)
            {
                Assert.All(bytes.AsSpan((int)(r * t.RowByteLength), (int)t.RowByteLength).ToArray(), b => Assert.Equal((byte)(r + 1), b));
            }
        }
        Assert.Equal(gateBytes, CheckpointReader.ReadTensor(result, result.Get(gate.Name)));
        // Tensors nobody wrote yet read as zeros; their neighbours are untouched.
        Assert.All(CheckpointReader.ReadTensor(result, result.Get("model.norm.weight")), b => Assert.Equal(0, b));
    }

    [Fact]
    public void WritesCheckTheirArgumentsAndTheLayout()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), Header(Entry("a", "F32", [2], 0, 8)), 8);
        var m = CheckpointReader.ReadManifest(path);
        var a = m.Get("a");
        var output = dir.Sub("out");

        var missing = Assert.Throws<InvalidOperationException>(() => CheckpointOutput.WriteTensor(output, a, new byte[8]));
        Assert.Contains("'a'", missing.Message);
        Assert.Contains("CreateLayout", missing.Message);

        CheckpointOutput.CreateLayout(m, output);
        Assert.Throws<ArgumentException>(() => CheckpointOutput.WriteTensor(output, a, new byte[7]));
        Assert.Throws<ArgumentOutOfRangeException>(() => CheckpointOutput.WriteTensorRange(output, a, 4, new byte[5]));
        Assert.Throws<ArgumentException>(() => CheckpointOutput.CreateLayout(m, dir.Path));

        CheckpointOutput.WriteTensorRange(output, a, 4, new byte[] { 1, 2, 3, 4 });
        var written = CheckpointReader.ReadManifest(output);
        Assert.Equal(new byte[] { 0, 0, 0, 0, 1, 2, 3, 4 }, CheckpointReader.ReadTensor(written, written.Get("a")));
    }

    [Fact]
    public void CompanionFilesAreTheConfigAndTokenizerFilesAtTopLevel()
    {
        using var dir = new TempDir();
        Write(dir.File("model.safetensors"), Header(Entry("a", "U8", [1], 0, 1)), 1);
        string[] companions =
        [
            "LICENSE", "README.md", "chat_template.jinja", "config.json", "generation_config.json", "merges.txt",
            "modeling_custom.py", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
            "vocab.json", "vocab.txt",
        ];
        string[] others =
        [
            ".gitattributes", "model.safetensors.index.json.bak", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "model.pt", "shears-report.json", "other.safetensors.index.json.tmp",
        ];
        foreach (var name in companions.Concat(others))
        {
            File.WriteAllText(dir.File(name), name);
        }
        File.WriteAllText(Path.Combine(dir.Sub("nested"), "config.json"), "{}");

        var fromDirectory = CheckpointReader.ReadManifest(dir.Path);
        var fromFile = CheckpointReader.ReadManifest(dir.File("model.safetensors"));

        Assert.Equal(companions, fromDirectory.CompanionFiles);
        Assert.Equal(companions, fromFile.CompanionFiles);
        Assert.Equal(dir.Path, fromFile.Root);
    }
}
