using System.Buffers.Binary;
using System.Text;
using Shears.Pruning.Checkpoints;
using static Shears.Pruning.Tests.Checkpoints.RawSafetensors;

namespace Shears.Pruning.Tests.Checkpoints;

public class SafetensorsRoundTripTests
{
    [Fact]
    public void EveryDTypeScalarAndEmptyTensorRoundTrips()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        var declared = new List<(string Name, TensorDType DType, long[] Shape)>();
        var data = new Dictionary<string, byte[]>();
        var seed = 0;
        foreach (var dtype in Enum.GetValues<TensorDType>())
        {
            var name = "t." + dtype.ToHeaderName();
            declared.Add((name, dtype, [2, 3]));
            data[name] = RandomBytes(6 * dtype.ElementSize(), seed++);
        }
        declared.Add(("scalar", TensorDType.F32, []));
        data["scalar"] = BitConverter.GetBytes(3.5f);
        declared.Add(("empty", TensorDType.BF16, [0, 4]));
        data["empty"] = [];
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\"" };

        using (var writer = new SafetensorsWriter(path, declared, metadata))
        {
            foreach (var (name, _, _) in declared)
            {
                writer.WriteTensor(name, data[name]);
            }
            writer.Complete();
        }

        var m = CheckpointReader.ReadManifest(path);

        Assert.Equal(dir.Path, m.Root);
        Assert.Null(m.IndexFileName);
        var file = Assert.Single(m.Files);
        Assert.Equal("model.safetensors", file.FileName);
        Assert.Equal(new FileInfo(path).Length, file.FileLength);
        Assert.Equal(metadata, file.Metadata);
        Assert.Equal(declared.Select(d => d.Name).Order(StringComparer.Ordinal), m.Tensors.Select(t => t.Name));
        Assert.Equal(data.Values.Sum(d => (long)d.Length), m.TotalBytes);

        long expectedOffset = file.HeaderBytes;
        foreach (var (name, dtype, shape) in declared)
        {
            var t = m.Get(name);
            Assert.Equal(dtype, t.DType);
            Assert.Equal(shape, t.Shape);
            Assert.Equal(expectedOffset, t.FileOffset); // laid out in declared order
            Assert.Equal(data[name], CheckpointReader.ReadTensor(m, t));
            expectedOffset += data[name].Length;
        }
        Assert.Equal(1, m.Get("scalar").ElementCount);
        Assert.Equal(0, m.Get("empty").ElementCount);
        Assert.Equal(6, m.Get("t.F64").ElementCount);
        Assert.Equal(file.FileLength, expectedOffset);
    }

    [Fact]
    public void HeaderMatchesTheReferenceLibraryByteForByte()
    {
        // safetensors.torch.save_file({"a": torch.zeros(2)}) writes exactly this header.
        using var dir = new TempDir();
        var path = dir.File("a.safetensors");
        using (var writer = new SafetensorsWriter(path, [("a", TensorDType.F32, [2])]))
        {
            writer.WriteTensor("a", new byte[8]);
            writer.Complete();
        }

        var bytes = File.ReadAllBytes(path);
        var json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        var padded = json + new string(' ', (8 - json.Length % 8) % 8);
        Assert.Equal((ulong)padded.Length, BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        Assert.Equal(padded, Encoding.UTF8.GetString(bytes, 8, padded.Length));
        Assert.Equal(8 + padded.Length + 8, bytes.Length);
    }

    [Fact]
    public void HeaderIsPaddedWithSpacesToAMultipleOfEight()
    {
        using var dir = new TempDir();
        for (var nameLength = 1; nameLength <= 9; nameLength++)
        {
            var path = dir.File($"p{nameLength}.safetensors");
            var name = new string('w', nameLength);
            using (var writer = new SafetensorsWriter(path, [(name, TensorDType.U8, [3])]))
            {
                writer.WriteTensor(name, [1, 2, 3]);
                writer.Complete();
            }

            var bytes = File.ReadAllBytes(path);
            var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.Equal(0, headerLength % 8);
            var header = Encoding.UTF8.GetString(bytes, 8, headerLength);
            var jsonEnd = header.LastIndexOf('}') + 1;
            Assert.True(header.Length - jsonEnd < 8);
            Assert.All(header[jsonEnd..], c => Assert.Equal(' ', c));

            var m = CheckpointReader.ReadManifest(path);
            Assert.Equal(8 + headerLength, m.Files[0].HeaderBytes);
            Assert.Equal(new byte[] { 1, 2, 3 }, CheckpointReader.ReadTensor(m, m.Get(name)));
        }
    }

    [Fact]
    public void ManifestOrdersTensorsOrdinallyWhateverTheFileOrder()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        string[] names = ["b", "a", "B", "a.10", "a.9", "_"];
        using (var writer = new SafetensorsWriter(path, names.Select(n => (n, TensorDType.U8, new long[] { 1 })).ToArray()))
        {
            foreach (var n in names)
            {
                writer.WriteTensor(n, [(byte)n[0]]);
            }
            writer.Complete();
        }

        var m = CheckpointReader.ReadManifest(dir.Path);

        Assert.Equal(["B", "_", "a", "a.10", "a.9", "b"], m.Tensors.Select(t => t.Name));
        var e = Assert.Throws<KeyNotFoundException>(() => m.Get("model.missing.weight"));
        Assert.Contains("model.missing.weight", e.Message);
    }

    [Fact]
    public void ManifestReadsHeadersOnlyOfAHugeSparseFile()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        const long elements = 1L << 28; // 1 GiB of F32
        var header = Encoding.UTF8.GetBytes(Header(Entry("big", "F32", [elements >> 12, 4096], 0, elements * 4)));
        Write(path, header, 0);
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(8 + header.Length + elements * 4);
        }

        var m = CheckpointReader.ReadManifest(path);

        var big = m.Get("big");
        Assert.Equal(elements * 4, big.ByteLength);
        Assert.Equal(elements, big.ElementCount);
        Assert.Equal(16384, big.RowByteLength);
        var lastRow = new byte[big.RowByteLength];
        CheckpointReader.ReadTensorRange(m, big, big.ByteLength - lastRow.Length, lastRow);
        Assert.All(lastRow, b => Assert.Equal(0, b));
    }

    [Fact]
    public void ReadTensorRangeReadsRowBlocks()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        var data = RandomBytes(4 * 5 * 2, 7);
        using (var writer = new SafetensorsWriter(path, [("pad", TensorDType.U8, [3]), ("w", TensorDType.BF16, [4, 5])]))
        {
            writer.WriteTensor("pad", [9, 9, 9]);
            writer.WriteTensor("w", data);
            writer.Complete();
        }
        var m = CheckpointReader.ReadManifest(path);
        var w = m.Get("w");

        var rows = new byte[2 * w.RowByteLength];
        CheckpointReader.ReadTensorRange(m, w, w.RowByteLength, rows);

        Assert.Equal(data[10..30], rows);
        Assert.Throws<ArgumentOutOfRangeException>(() => CheckpointReader.ReadTensorRange(m, w, 30, new byte[11]));
        Assert.Throws<ArgumentOutOfRangeException>(() => CheckpointReader.ReadTensorRange(m, w, -1, new byte[1]));
        Assert.Throws<ArgumentException>(() => CheckpointReader.ReadTensor(m, w, new byte[39]));
    }

    [Fact]
    public void ReadingATensorOfAFileTruncatedAfterTheManifestNamesFileAndTensor()
    {
        using var dir = new TempDir();
        var path = Write(dir.File("model.safetensors"), Header(Entry("a", "F32", [2], 0, 8), Entry("b", "F32", [2], 8, 16)), 16);
        var m = CheckpointReader.ReadManifest(path);
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(stream.Length - 4);
        }

        Assert.Equal(8, CheckpointReader.ReadTensor(m, m.Get("a")).Length);
        var e = Assert.Throws<CheckpointFormatException>(() => CheckpointReader.ReadTensor(m, m.Get("b")));
        Assert.Equal(path, e.FilePath);
        Assert.Equal("b", e.TensorName);
        Assert.Contains("truncated", e.Message);

        File.Delete(path);
        e = Assert.Throws<CheckpointFormatException>(() => CheckpointReader.ReadTensor(m, m.Get("a")));
        Assert.Equal("a", e.TensorName);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void WriterRefusesOutOfOrderWrongLengthAndMissingTensors()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        using (var writer = new SafetensorsWriter(path, [("first", TensorDType.F32, [2]), ("second", TensorDType.F16, [3])]))
        {
            var e = Assert.Throws<InvalidOperationException>(() => writer.WriteTensor("second", new byte[6]));
            Assert.Contains("'second'", e.Message);
            Assert.Contains("'first' comes next", e.Message);

            e = Assert.Throws<InvalidOperationException>(() => writer.WriteTensor("first", new byte[4]));
            Assert.Contains("'first' has 4 bytes; expected 8", e.Message);

            writer.WriteTensor("first", new byte[8]);
            e = Assert.Throws<InvalidOperationException>(() => writer.Complete());
            Assert.Contains("'second' was never written", e.Message);

            writer.WriteTensor("second", new byte[6]);
            e = Assert.Throws<InvalidOperationException>(() => writer.WriteTensor("third", new byte[1]));
            Assert.Contains("'third'", e.Message);
            Assert.True(File.Exists(path + ".tmp"));
            Assert.False(File.Exists(path));
        }

        // Disposed without Complete: nothing is left behind.
        Assert.False(File.Exists(path + ".tmp"));
        Assert.False(File.Exists(path));
        Assert.Throws<ArgumentException>(() => new SafetensorsWriter(path, [("a", TensorDType.U8, [1]), ("a", TensorDType.U8, [1])]));
        Assert.Throws<ArgumentException>(() => new SafetensorsWriter(path, [("a", TensorDType.U8, [-1])]));
    }

    [Fact]
    public void CompleteReplacesAnExistingFileAtomically()
    {
        using var dir = new TempDir();
        var path = dir.File("model.safetensors");
        File.WriteAllText(path, "old");
        using (var writer = new SafetensorsWriter(path, [("a", TensorDType.U8, [2])]))
        {
            writer.WriteTensor("a", [4, 2]);
            Assert.Equal("old", File.ReadAllText(path));
            writer.Complete();
            Assert.Equal(writer.FileLength, new FileInfo(path).Length);
        }

        Assert.False(File.Exists(path + ".tmp"));
        var m = CheckpointReader.ReadManifest(path);
        Assert.Equal(new byte[] { 4, 2 }, CheckpointReader.ReadTensor(m, m.Get("a")));
    }
}
