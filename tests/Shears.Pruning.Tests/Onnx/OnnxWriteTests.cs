using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using static Shears.Pruning.Tests.Onnx.OnnxBytes;

namespace Shears.Pruning.Tests.Onnx;

public class OnnxWriteTests
{
    private static (string Path, byte[] Bytes) TwoMatrices(TempDir dir)
    {
        var bytes = Model(Graph(
            [
                RawTensor("a", FLOAT, [4, 8], Pattern(128, 1)),
                RawTensor("b", FLOAT16, [8, 4], Pattern(64, 2)),
                t => t.PackedVarints(1, [2]).Varint(2, (long)INT64).String(8, "typed").PackedVarints(7, [5, 6]),
            ],
            [Node("MatMul", "m0", ["x", "a"], ["y"]), Node("MatMul", "m1", ["y", "b"], ["z"])]));
        var path = dir.File("in.onnx");
        File.WriteAllBytes(path, bytes);
        return (path, bytes);
    }

    [Fact]
    public void ReplacesOnlyTheNamedRawDataRanges()
    {
        using var dir = new TempDir();
        var (input, before) = TwoMatrices(dir);
        var model = OnnxModel.Read(input);
        var b = model.FindInitializer("b")!;
        var output = Path.Combine(dir.Sub("out"), "pruned.onnx");

        OnnxModel.WriteWithReplacedData(input, output, new Dictionary<string, byte[]> { ["b"] = new byte[64] });

        var after = File.ReadAllBytes(output);
        Assert.Equal(before.Length, after.Length);
        for (var i = 0; i < before.Length; i++)
        {
            var inB = i >= b.RawDataOffset && i < b.RawDataOffset + b.RawDataLength;
            Assert.Equal(inB ? (byte)0 : before[i], after[i]);
        }
        Assert.Equal(before, File.ReadAllBytes(input));
        Assert.Equal(["pruned.onnx"], Directory.GetFiles(Path.GetDirectoryName(output)!).Select(Path.GetFileName));
        Assert.Equal(new byte[64], OnnxModel.Read(output).ReadRawData("b"));
    }

    [Fact]
    public void TheOutputLayoutCopiesEveryByteButTheTensorsTheShardsWrite()
    {
        using var dir = new TempDir();
        var (input, before) = TwoMatrices(dir);
        var manifest = OnnxCheckpoint.ReadManifest(input);
        var b = OnnxModel.Read(input).FindInitializer("b")!;

        Shears.Pruning.Checkpoints.CheckpointOutput.CreateLayout(manifest, dir.Sub("out"), new HashSet<string> { "b" });

        // b's range is left to its shard (unwritten: zeros); every other byte, a's data and the protobuf around, is the input's.
        var after = File.ReadAllBytes(Path.Combine(dir.Sub("out"), Path.GetFileName(input)));
        Assert.Equal(before.Length, after.Length);
        for (var i = 0; i < before.Length; i++)
        {
            var inB = i >= b.RawDataOffset && i < b.RawDataOffset + b.RawDataLength;
            Assert.True((inB ? (byte)0 : before[i]) == after[i], $"byte {i}");
        }
        Shears.Pruning.Checkpoints.CheckpointOutput.CreateLayout(manifest, dir.Sub("whole"));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(dir.Sub("whole"), Path.GetFileName(input))));
    }

    [Fact]
    public void WithNoReplacementsTheCopyIsIdentical()
    {
        using var dir = new TempDir();
        var (input, before) = TwoMatrices(dir);
        var output = dir.File("copy.onnx");
        OnnxModel.WriteWithReplacedData(input, output, new Dictionary<string, byte[]>());
        Assert.Equal(before, File.ReadAllBytes(output));
    }

    [Fact]
    public void OverwritesAnExistingOutput()
    {
        using var dir = new TempDir();
        var (input, _) = TwoMatrices(dir);
        var output = dir.File("out.onnx");
        File.WriteAllText(output, "old");
        var a = Pattern(128, 99);
        OnnxModel.WriteWithReplacedData(input, output, new Dictionary<string, byte[]> { ["a"] = a });
        Assert.Equal(a, OnnxModel.Read(output).ReadRawData("a"));
    }

    public static TheoryData<string, byte[], string> BadReplacements() => new()
    {
        { "a", new byte[127], "has 127 bytes; its raw_data has 128" },
        { "missing", new byte[4], "no initializer named 'missing'" },
        { "typed", new byte[16], "not in raw_data" },
    };

    [Theory]
    [MemberData(nameof(BadReplacements))]
    public void RefusesBadReplacementsAndWritesNothing(string name, byte[] bytes, string expected)
    {
        using var dir = new TempDir();
        var (input, _) = TwoMatrices(dir);
        var outDir = dir.Sub("out");
        var e = Assert.Throws<ArgumentException>(() =>
            OnnxModel.WriteWithReplacedData(input, Path.Combine(outDir, "x.onnx"), new Dictionary<string, byte[]> { ["b"] = new byte[64], [name] = bytes }));
        Assert.Contains(expected, e.Message);
        Assert.Contains(input, e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(outDir));
    }
}
