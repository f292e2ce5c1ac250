using System.Text;
using Shears.Pruning.Checkpoints;
using static Shears.Pruning.Tests.Checkpoints.RawSafetensors;

namespace Shears.Pruning.Tests.Checkpoints;

public class CheckpointValidationTests
{
    private static CheckpointFormatException ReadFails(string path) =>
        Assert.Throws<CheckpointFormatException>(() => CheckpointReader.ReadManifest(path));

    private static void AssertNames(CheckpointFormatException e, string file, string? tensor, string fragment)
    {
        Assert.Equal(file, e.FilePath);
        Assert.Contains(Path.GetFileName(file), e.Message);
        Assert.Equal(tensor, e.TensorName);
        if (tensor is not null)
        {
            Assert.Contains($"'{tensor}'", e.Message);
        }
        Assert.Contains(fragment, e.Message);
    }

    public static TheoryData<string, string, long, string?, string> BadHeaders() => new()
    {
        // case, header, data bytes, tensor named, message fragment
        { "not json", "not json", 0, null, "not valid JSON" },
        { "array", "[1,2]", 0, null, "must be a JSON object" },
        { "empty", "   ", 0, null, "not valid JSON" },
        { "unterminated", "{\"a\":{\"dtype\":\"F32\"", 0, "a", "not valid JSON" },
        { "trailing garbage", Header(Entry("a", "F32", [1], 0, 4)) + " x", 4, null, "not valid JSON" },
        { "entry not object", "{\"a\":5}", 0, "a", "expected an object" },
        { "missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "a", "missing 'dtype'" },
        { "missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "a", "missing 'shape'" },
        { "missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "a", "missing 'data_offsets'" },
        { "dtype number", "{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "a", "'dtype' must be a string" },
        { "shape string", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "a", "'shape' must be an array" },
        { "shape float", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "a", "'shape' must hold integers" },
        { "offsets string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0\"}}", 4, "a", "'data_offsets' must be an array" },
        { "dtype twice", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "a", "'dtype' appears twice" },
        { "unknown dtype", Header(Entry("a", "F128", [1], 0, 4)), 4, "a", "unknown dtype 'F128'" },
        { "numeric dtype", Header(Entry("a", "1", [1], 0, 4)), 4, "a", "unknown dtype '1'" },
        { "lower-case dtype", Header(Entry("a", "f32", [1], 0, 4)), 4, "a", "unknown dtype 'f32'" },
        { "negative dim", Header(Entry("a", "F32", [2, -1], 0, 4)), 4, "a", "negative value -1" },
        { "offsets reversed", Header(Entry("a", "F32", [0], 4, 0)), 4, "a", "begin <= end" },
        { "one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, "a", "[begin, end]" },
        { "three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "a", "[begin, end]" },
        { "negative offset", Header(Entry("a", "F32", [1], -4, 0)), 4, "a", "negative value -4" },
        { "size mismatch", Header(Entry("a", "F32", [2, 3], 0, 12)), 12, "a", "expected 24" },
        { "bf16 size mismatch", Header(Entry("a", "BF16", [4], 0, 4)), 4, "a", "expected 8" },
        { "overflowing shape", Header(Entry("a", "F64", [4294967296, 4294967296], 0, 8)), 8, "a", "more bytes than a file can hold" },
        { "overlap", Header(Entry("a", "F32", [2], 0, 8), Entry("b", "F32", [2], 4, 12)), 12, "b", "overlap tensor 'a'" },
        { "hole", Header(Entry("a", "F32", [1], 0, 4), Entry("b", "F32", [1], 8, 12)), 12, "b", "hole of 4 bytes" },
        { "hole at start", Header(Entry("a", "F32", [1], 4, 8)), 8, "a", "hole of 4 bytes" },
        { "past end", Header(Entry("a", "F32", [1], 0, 4), Entry("b", "F32", [4], 4, 20)), 12, "b", "run past the end" },
        { "trailing data", Header(Entry("a", "F32", [1], 0, 4)), 12, null, "cover only 4" },
        { "duplicate name", Header(Entry("a", "F32", [1], 0, 4), Entry("a", "F32", [1], 4, 8)), 8, "a", "appears twice" },
        { "metadata number", "{\"__metadata__\":{\"format\":\"pt\",\"step\":3}," + Entry("a", "F32", [1], 0, 4) + "}", 4, null, "__metadata__[\"step\"] must be a string" },
        { "metadata array", "{\"__metadata__\":[\"pt\"]," + Entry("a", "F32", [1], 0, 4) + "}", 4, null, "__metadata__ must be an object" },
        { "metadata nested", "{\"__metadata__\":{\"a\":{}}," + Entry("a", "F32", [1], 0, 4) + "}", 4, null, "must be a string" },
        { "metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}," + Entry("a", "F32", [1], 0, 4) + "}", 4, null, "appears twice" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void MalformedHeaderIsRefusedNamingFileAndTensor(string @case, string header, long dataLength, string? tensor, string fragment)
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), header, dataLength);

        var e = ReadFails(path);

        Assert.True(e.Message.Contains(fragment), $"{@case}: '{e.Message}' lacks '{fragment}'");
        AssertNames(e, path, tensor, fragment);
    }

    [Fact]
    public void MissingPathIsRefused()
    {
        using var dir = new TempDir();
        var path = dir.File("nope.safetensors");
        AssertNames(ReadFails(path), path, null, "no such file or directory");
    }

    [Fact]
    public void FileShorterThanTheLengthPrefixIsTruncated()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);
        AssertNames(ReadFails(path), path, null, "truncated: 5 bytes");
    }

    [Fact]
    public void HeaderLengthPastTheEndOfTheFileIsRefused()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), "{}", 0, declaredHeaderLength: 1000);
        AssertNames(ReadFails(path), path, null, "header length 1000 runs past the end of the file (10 bytes)");
    }

    [Fact]
    public void AbsurdHeaderLengthIsRefusedBeforeReading()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), "{}", 0, declaredHeaderLength: 100_000_001);
        AssertNames(ReadFails(path), path, null, "larger than the 100000000 bytes allowed");

        Write(path, "{}", 0, declaredHeaderLength: ulong.MaxValue);
        AssertNames(ReadFails(path), path, null, "larger than");
    }

    [Fact]
    public void HeaderThatIsNotUtf8IsRefused()
    {
        using var dir = new TempDir();
        var header = Encoding.UTF8.GetBytes("{\"a\":{}}");
        header[2] = 0xFF;
        var path = Write(dir.File("model.safetensors"), header, 0);
        AssertNames(ReadFails(path), path, null, "not valid UTF-8");
    }

    [Fact]
    public void DirectoryWithoutSafetensorsIsRefused()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), "{}");
        AssertNames(ReadFails(dir.Path), dir.Path, null, "holds no .safetensors file");
    }

    [Fact]
    public void DirectoryWithSeveralFilesAndNoIndexIsRefused()
    {
        using var dir = new TempDir();
        Write(dir.File("a.safetensors"), Header(Entry("x", "U8", [1], 0, 1)), 1);
        Write(dir.File("b.safetensors"), Header(Entry("y", "U8", [1], 0, 1)), 1);
        AssertNames(ReadFails(dir.Path), dir.Path, null, "holds 2 .safetensors files (a.safetensors, b.safetensors) but no model.safetensors.index.json");
    }

    [Fact]
    public void FileOfAnotherKindIsRefused()
    {
        using var dir = new TempDir();
        var path = dir.File("pytorch_model.bin");
        File.WriteAllBytes(path, new byte[16]);
        AssertNames(ReadFails(path), path, null, "expected a checkpoint directory");
    }

    // Two shards a.safetensors {x, y} and b.safetensors {z}, and an index given as JSON.
    private static string Sharded(TempDir dir, string index)
    {
        Write(dir.File("a.safetensors"), Header(Entry("x", "F32", [1], 0, 4), Entry("y", "U8", [2], 4, 6)), 6);
        Write(dir.File("b.safetensors"), Header(Entry("z", "F16", [3], 0, 6)), 6);
        File.WriteAllText(dir.File("model.safetensors.index.json"), index);
        return dir.File("model.safetensors.index.json");
    }

    private const string GoodMap = "{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\",\"z\":\"b.safetensors\"}";

    [Fact]
    public void WellFormedShardedCheckpointReads()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"metadata\":{\"total_size\":12},\"weight_map\":" + GoodMap + "}");

        var m = CheckpointReader.ReadManifest(dir.Path);

        Assert.Equal("model.safetensors.index.json", m.IndexFileName);
        Assert.Equal(["a.safetensors", "b.safetensors"], m.Files.Select(f => f.FileName));
        Assert.Equal(["x", "y", "z"], m.Tensors.Select(t => t.Name));
        Assert.Equal("b.safetensors", m.Get("z").FileName);
        Assert.Equal(4 + 2 + 6, m.TotalBytes);
    }

    [Fact]
    public void MalformedIndexIsRefused()
    {
        using var dir = new TempDir();
        var index = Sharded(dir, "{\"weight_map\": {\"x\": ");
        AssertNames(ReadFails(dir.Path), index, null, "index is not valid JSON");

        File.WriteAllText(index, "[]");
        AssertNames(ReadFails(dir.Path), index, null, "must be a JSON object");

        File.WriteAllText(index, "{\"metadata\":{}}");
        AssertNames(ReadFails(dir.Path), index, null, "no \"weight_map\" object");

        File.WriteAllText(index, "{\"weight_map\":{\"x\":3}}");
        AssertNames(ReadFails(dir.Path), index, "x", "must be a file name string");

        File.WriteAllText(index, "{\"weight_map\":{\"x\":\"../a.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), index, "x", "inside the checkpoint directory");

        File.WriteAllText(index, "{\"weight_map\":{\"x\":\"a.safetensors\",\"x\":\"b.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), index, "x", "appears twice in weight_map");

        File.WriteAllText(index, "{\"weight_map\":{}}");
        AssertNames(ReadFails(dir.Path), index, null, "weight_map is empty");
    }

    [Fact]
    public void IndexNamingAMissingFileIsRefused()
    {
        using var dir = new TempDir();
        var index = Sharded(dir, "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\",\"z\":\"c.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), index, "z", "names file 'c.safetensors', which does not exist");
    }

    [Fact]
    public void TensorInIndexButNotInItsFileIsRefused()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\",\"z\":\"b.safetensors\",\"w\":\"b.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), dir.File("b.safetensors"), "w", "the file does not hold it");
    }

    [Fact]
    public void TensorInFileButNotInIndexIsRefused()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"weight_map\":{\"x\":\"a.safetensors\",\"z\":\"b.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), dir.File("a.safetensors"), "y", "not in the weight_map");
    }

    [Fact]
    public void TensorMappedToTheWrongFileIsRefused()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\",\"z\":\"b.safetensors\"}}");
        AssertNames(ReadFails(dir.Path), dir.File("a.safetensors"), "y", "maps it to 'b.safetensors'");
    }

    [Fact]
    public void TensorInTwoShardsIsRefused()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"weight_map\":" + GoodMap + "}");
        Write(dir.File("b.safetensors"), Header(Entry("z", "F16", [3], 0, 6), Entry("x", "F32", [1], 6, 10)), 10);
        AssertNames(ReadFails(dir.Path), dir.File("b.safetensors"), "x", "appears in both 'a.safetensors' and 'b.safetensors'");
    }

    [Fact]
    public void BrokenShardIsReportedThroughTheIndex()
    {
        using var dir = new TempDir();
        Sharded(dir, "{\"weight_map\":" + GoodMap + "}");
        Write(dir.File("b.safetensors"), Header(Entry("z", "F16", [3], 0, 6)), 4);
        AssertNames(ReadFails(dir.Path), dir.File("b.safetensors"), "z", "run past the end");
    }

    [Fact]
    public void ZeroLengthTensorsMayShareAnOffset()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"),
            Header(Entry("a", "F32", [0], 0, 0), Entry("b", "F32", [1], 0, 4), Entry("c", "F16", [0, 5], 4, 4), Entry("d", "F16", [2, 0], 4, 4)), 4);

        var m = CheckpointReader.ReadManifest(path);

        Assert.Equal([0L, 4, 0, 0], m.Tensors.Select(t => t.ByteLength));
    }

    [Fact]
    public void UnknownFieldsOfATensorEntryAreIgnored()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"),
            "{\"a\":{\"dtype\":\"F32\",\"extra\":{\"nested\":[1,{}]},\"shape\":[1],\"data_offsets\":[0,4]}}", 4);

        Assert.Equal(TensorDType.F32, CheckpointReader.ReadManifest(path).Get("a").DType);
    }

    [Fact]
    public void NullMetadataMeansNone()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), "{\"__metadata__\":null," + Entry("a", "F32", [1], 0, 4) + "}", 4);

        Assert.Null(CheckpointReader.ReadManifest(path).Files[0].Metadata);
    }
}
