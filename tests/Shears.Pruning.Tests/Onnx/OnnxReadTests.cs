using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using static Shears.Pruning.Tests.Onnx.OnnxBytes;

namespace Shears.Pruning.Tests.Onnx;

public class OnnxReadTests
{
    private static string WriteModel(TempDir dir, byte[] bytes, string name = "model.onnx")
    {
        var path = dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static long IndexOf(byte[] haystack, byte[] needle)
    {
        var at = haystack.AsSpan().IndexOf(needle);
        Assert.True(at >= 0);
        Assert.Equal(-1, haystack.AsSpan(at + 1).IndexOf(needle)); // unique, so the expected offset is unambiguous
        return at;
    }

    [Fact]
    public void ReadsInitializersNodesAndTheAbsoluteOffsetsOfRawData()
    {
        using var dir = new TempDir();
        var w = Pattern(2 * 3 * 4, 1);
        var h = Pattern(4 * 2, 2);
        var b = Pattern(300 * 2, 3); // 600 bytes: a two-byte length prefix
        var bytes = Model(Graph(
            [
                RawTensor("w", FLOAT, [2, 3], w),
                RawTensor("h", FLOAT16, [4], h),
                RawTensor("b", BFLOAT16, [20, 15], b),
                t => t.Varint(1, 3L).Varint(2, (long)INT64).String(8, "shape").PackedVarints(7, [1, 2, 3]),
            ],
            [
                Node("MatMul", "mm", ["x", "w"], ["y"]),
                Node("Gemm", "gemm", ["y", "b"], ["z"], ("transB", 1), ("alpha", 2)),
            ]));
        var path = WriteModel(dir, bytes);

        var model = OnnxModel.Read(path);

        Assert.Equal(Path.GetFullPath(path), model.FilePath);
        Assert.Equal(bytes.Length, model.FileLength);
        Assert.Equal(8, model.IrVersion);
        Assert.Equal("shears-tests", model.ProducerName);
        Assert.Equal(13, model.Opsets[""]);
        Assert.Equal("test-graph", model.GraphName);
        Assert.Equal(["w", "h", "b", "shape"], model.Initializers.Select(i => i.Name));

        var wi = model.FindInitializer("w")!;
        Assert.Equal(OnnxElementType.Float, wi.ElementType);
        Assert.Equal(TensorDType.F32, wi.DataType);
        Assert.Equal([2L, 3L], wi.Dims);
        Assert.Equal(OnnxDataStorage.RawData, wi.Storage);
        Assert.Equal(IndexOf(bytes, w), wi.RawDataOffset);
        Assert.Equal(24, wi.RawDataLength);
        Assert.Equal(w, model.ReadRawData("w"));

        var hi = model.FindInitializer("h")!;
        Assert.Equal(TensorDType.F16, hi.DataType);
        Assert.Equal(IndexOf(bytes, h), hi.RawDataOffset);

        var bi = model.FindInitializer("b")!;
        Assert.Equal(TensorDType.BF16, bi.DataType);
        Assert.Equal(IndexOf(bytes, b), bi.RawDataOffset);
        Assert.Equal(600, bi.RawDataLength);
        Assert.Equal(b, model.ReadRawData("b"));

        var shape = model.FindInitializer("shape")!;
        Assert.Equal(OnnxDataStorage.TypedField, shape.Storage);
        Assert.Null(shape.RawDataOffset);
        Assert.Null(shape.RawDataLength);
        Assert.Null(shape.ToTensorEntry("model.onnx"));

        var entry = wi.ToTensorEntry("model.onnx")!;
        Assert.Equal(("w", TensorDType.F32, "model.onnx", wi.RawDataOffset!.Value, 24L), (entry.Name, entry.DType, entry.FileName, entry.FileOffset, entry.ByteLength));
        Assert.Equal([2L, 3L], entry.Shape);

        Assert.Equal(["mm", "gemm"], model.Nodes.Select(n => n.Name));
        var gemm = model.Nodes[1];
        Assert.Equal("Gemm", gemm.OpType);
        Assert.Equal(["y", "b"], gemm.Inputs);
        Assert.Equal(["z"], gemm.Outputs);
        Assert.Equal(1, gemm.IntAttribute("transB", 0));
        Assert.Equal(0, gemm.IntAttribute("transA", 0));
    }

    [Fact]
    public void SkipsUnknownFieldsOfEveryWireTypeAndReadsUnpackedDims()
    {
        using var dir = new TempDir();
        var raw = Pattern(6 * 4, 7);
        var bytes = new ProtoWriter()
            .Fixed64(99, 0x0102030405060708)
            .Varint(1, 7L)
            .Fixed32(98, 0xDEADBEEF)
            .Bytes(97, Pattern(70_000, 8)) // larger than the reader's buffer: skipped by seeking
            .Varint(100_000, ulong.MaxValue) // a ten-byte varint in a five-byte key
            .Message(7, g => g
                .Fixed32(50, 1)
                .Message(5, t => t
                    .Varint(1, 2L).Varint(1, 3L) // dims written one value per key
                    .Fixed64(40, 5)
                    .Varint(2, (long)FLOAT)
                    .String(8, "w")
                    .Message(12345, _ => { })
                    .Bytes(9, raw))
                .Message(1, n => n
                    .String(1, "x").String(1, "w").String(2, "y").String(3, "mm").String(4, "MatMul")
                    .Message(5, a => a.String(1, "big").Varint(20, 4L).Message(5, t => t.Bytes(9, Pattern(100_000, 9))))
                    .Fixed32(60, 0))
                .Fixed64(51, 2))
            .Varint(5, 42L)
            .ToArray();
        var path = WriteModel(dir, bytes);

        var model = OnnxModel.Read(path);

        var w = Assert.Single(model.Initializers);
        Assert.Equal([2L, 3L], w.Dims);
        Assert.Equal(IndexOf(bytes, raw), w.RawDataOffset);
        Assert.Equal(raw, model.ReadRawData("w"));
        var node = Assert.Single(model.Nodes);
        Assert.Equal(["x", "w"], node.Inputs);
        Assert.Empty(node.IntAttributes); // a tensor attribute is skipped, not kept
    }

    [Fact]
    public void ReadsRawDataLargerThanTheBufferAndTypedFloatData()
    {
        using var dir = new TempDir();
        var big = Pattern(256 * 1024 * 4, 11);
        var bytes = Model(Graph(
            [
                t => t.PackedVarints(1, [3]).Varint(2, (long)FLOAT).String(8, "packed").Bytes(4, Pattern(12, 12)),
                t => t.PackedVarints(1, [2]).Varint(2, (long)FLOAT).String(8, "unpacked").Fixed32(4, 1).Fixed32(4, 2),
                RawTensor("big", FLOAT, [256, 1024], big),
                t => t.PackedVarints(1, [0, 5]).Varint(2, (long)FLOAT).String(8, "empty"),
            ], []));
        var model = OnnxModel.Read(WriteModel(dir, bytes));

        Assert.Equal(OnnxDataStorage.TypedField, model.FindInitializer("packed")!.Storage);
        Assert.Equal(OnnxDataStorage.TypedField, model.FindInitializer("unpacked")!.Storage);
        Assert.Equal(OnnxDataStorage.None, model.FindInitializer("empty")!.Storage);
        Assert.Equal(0, model.FindInitializer("empty")!.ElementCount);
        Assert.Equal(IndexOf(bytes, big[..64]), model.FindInitializer("big")!.RawDataOffset);
        Assert.Equal(big, model.ReadRawData("big"));
    }

    [Fact]
    public void ReadsExternalDataReferences()
    {
        using var dir = new TempDir();
        var bytes = Model(Graph(
            [
                t => t.PackedVarints(1, [4, 4]).Varint(2, (long)FLOAT).String(8, "ext")
                    .Message(13, e => e.String(1, "location").String(2, "weights.bin"))
                    .Message(13, e => e.String(1, "offset").String(2, "4096"))
                    .Message(13, e => e.String(1, "length").String(2, "64"))
                    .Varint(14, 1L),
            ], []));
        var ext = OnnxModel.Read(WriteModel(dir, bytes)).FindInitializer("ext")!;
        Assert.Equal(OnnxDataStorage.External, ext.Storage);
        Assert.Equal(new OnnxExternalData("weights.bin", 4096, 64), ext.ExternalData);
        Assert.Null(ext.RawDataOffset);
    }

    [Theory]
    [InlineData(1, TensorDType.F32)]
    [InlineData(10, TensorDType.F16)]
    [InlineData(16, TensorDType.BF16)]
    [InlineData(11, TensorDType.F64)]
    [InlineData(7, TensorDType.I64)]
    [InlineData(6, TensorDType.I32)]
    [InlineData(2, TensorDType.U8)]
    [InlineData(3, TensorDType.I8)]
    [InlineData(9, TensorDType.BOOL)]
    [InlineData(17, TensorDType.F8_E4M3)]
    [InlineData(19, TensorDType.F8_E5M2)]
    [InlineData(8, null)]
    [InlineData(14, null)]
    [InlineData(18, null)]
    [InlineData(22, null)]
    [InlineData(77, null)]
    public void MapsOnnxElementTypesToShearsDTypes(int onnxType, TensorDType? expected)
    {
        Assert.Equal(expected, ((OnnxElementType)onnxType).ToTensorDType());
    }

    [Theory]
    [InlineData(FLOAT, 24)]
    [InlineData(FLOAT16, 12)]
    [InlineData(BFLOAT16, 12)]
    [InlineData(INT64, 48)]
    [InlineData(22, 3)] // INT4: two per byte
    public void AcceptsRawDataOfExactlyTheSizeTheDimsNeed(int dataType, int bytes)
    {
        using var dir = new TempDir();
        var path = WriteModel(dir, Model(Graph([RawTensor("t", dataType, [2, 3], new byte[bytes])], [])));
        Assert.Equal(bytes, OnnxModel.Read(path).FindInitializer("t")!.RawDataLength);
    }

    [Fact]
    public void EveryTruncationOfAValidFileIsRefusedNamingTheFile()
    {
        using var dir = new TempDir();
        var bytes = Model(Graph(
            [RawTensor("w", FLOAT, [2, 2], Pattern(16, 1)), RawTensor("b", FLOAT, [2], Pattern(8, 2))],
            [Node("MatMul", "mm", ["x", "w"], ["y"], ("k", 300))]));
        var path = dir.File("cut.onnx");
        for (var length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(path, bytes[..length]);
            var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
            Assert.Equal(Path.GetFullPath(path), e.FilePath);
            Assert.Contains(path, e.Message);
        }
        File.WriteAllBytes(path, bytes);
        Assert.Equal(2, OnnxModel.Read(path).Initializers.Count);
    }

    [Fact]
    public void ALengthRunningPastItsTensorNamesTheTensor()
    {
        using var dir = new TempDir();
        var tensor = new ProtoWriter().PackedVarints(1, [2, 2]).Varint(2, (long)FLOAT).String(8, "encoder.w")
            .Key(9, 2).RawVarint(1000).Raw(new byte[16]).ToArray();
        var path = WriteModel(dir, [.. Model(g => g.Bytes(5, tensor)), .. new ProtoWriter().Varint(5, 1L).ToArray()]);
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Equal("encoder.w", e.TensorName);
        Assert.Contains("truncated TensorProto.raw_data: it declares 1000 bytes but its enclosing message has 16 left", e.Problem);
    }

    [Fact]
    public void ACutFileSaysHowMuchIsLeft()
    {
        using var dir = new TempDir();
        var bytes = Model(Graph([RawTensor("w", FLOAT, [64, 64], Pattern(64 * 64 * 4, 1))], []));
        var path = WriteModel(dir, bytes[..^100]);
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Contains("truncated ModelProto.graph", e.Problem);
        Assert.Contains("but the file has", e.Problem);
    }

    [Fact]
    public void RefusesRawDataWhoseLengthDoesNotMatchTheDims()
    {
        using var dir = new TempDir();
        var path = WriteModel(dir, Model(Graph([RawTensor("encoder.w", FLOAT, [2, 3], new byte[20])], [])));
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Equal("encoder.w", e.TensorName);
        Assert.Contains("raw_data has 20 bytes", e.Problem);
        Assert.Contains("[2, 3] of FLOAT need 24", e.Problem);
    }

    [Fact]
    public void RefusesDuplicateInitializerNames()
    {
        using var dir = new TempDir();
        var path = WriteModel(dir, Model(Graph(
            [RawTensor("w", FLOAT, [1], new byte[4]), RawTensor("v", FLOAT, [1], new byte[4]), RawTensor("w", FLOAT, [2], new byte[8])], [])));
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Equal("w", e.TensorName);
        Assert.Contains("unique", e.Problem);
    }

    public static TheoryData<string, byte[], string> CorruptFiles() => new()
    {
        { "empty", [], "no graph" },
        { "safetensors-like", [0x70, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'"', 32, 32, 32, 32, 32, 32], "not a valid ONNX protobuf" },
        { "overlong varint", new ProtoWriter().Key(1, 0).Raw([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).ToArray(), "malformed varint" },
        { "varint over 64 bits", new ProtoWriter().Key(1, 0).Raw([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).ToArray(), "more than 64 bits" },
        { "group wire type", new ProtoWriter().Key(7, 3).ToArray(), "group" },
        { "field number zero", new ProtoWriter().Key(0, 0).RawVarint(1).ToArray(), "field number 0" },
        { "graph as varint", new ProtoWriter().Varint(7, 5L).ToArray(), "ModelProto.graph has wire type 0" },
        {
            "child longer than parent",
            new ProtoWriter().Key(7, 2).RawVarint(4).Key(5, 2).RawVarint(50).Raw([0, 0]).Raw(new byte[60]).ToArray(),
            "enclosing message"
        },
        { "two graphs", new ProtoWriter().Message(7, _ => { }).Message(7, _ => { }).ToArray(), "second graph" },
        { "nameless initializer", Model(g => g.Message(5, t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).Bytes(9, new byte[4]))), "no name" },
        { "undefined data type", Model(Graph([t => t.PackedVarints(1, [1]).String(8, "t").Bytes(9, new byte[4])], [])), "data_type 0" },
        { "negative dim", Model(Graph([RawTensor("t", FLOAT, [-1, 2], new byte[8])], [])), "negative" },
        { "segment", Model(Graph([t => t.String(8, "t").Message(3, s => s.Varint(1, 0L).Varint(2, 1L))], [])), "segment" },
        { "raw and float_data", Model(Graph([t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).String(8, "t").Bytes(9, new byte[4]).Bytes(4, new byte[4])], [])), "more than one place" },
        { "float_data count", Model(Graph([t => t.PackedVarints(1, [3]).Varint(2, (long)FLOAT).String(8, "t").Bytes(4, new byte[8])], [])), "float_data has 2 values" },
        { "packed float_data ragged", Model(Graph([t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).String(8, "t").Bytes(4, new byte[5])], [])), "multiple of 4" },
        { "no data", Model(Graph([t => t.PackedVarints(1, [2]).Varint(2, (long)FLOAT).String(8, "t")], [])), "no data" },
        { "string raw_data", Model(Graph([RawTensor("t", STRING, [1], new byte[1])], [])), "STRING" },
        { "two raw_data", Model(Graph([t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).String(8, "t").Bytes(9, new byte[4]).Bytes(9, new byte[4])], [])), "two raw_data" },
        {
            "external without location",
            Model(Graph([t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).String(8, "t").Message(13, e => e.String(1, "offset").String(2, "0")).Varint(14, 1L)], [])),
            "location"
        },
        { "bad utf-8 name", Model(Graph([t => t.PackedVarints(1, [1]).Varint(2, (long)FLOAT).Bytes(8, [0xC3, 0x28]).Bytes(9, new byte[4])], [])), "UTF-8" },
    };

    [Theory]
    [MemberData(nameof(CorruptFiles))]
    public void RefusesCorruptFilesWithAClearMessage(string label, byte[] bytes, string expected)
    {
        using var dir = new TempDir();
        var path = WriteModel(dir, bytes, label.Replace(' ', '-') + ".onnx");
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Equal(Path.GetFullPath(path), e.FilePath);
        Assert.Contains(expected, e.Problem);
    }

    [Fact]
    public void AMissingFileIsAFormatErrorNamingIt()
    {
        using var dir = new TempDir();
        var path = dir.File("absent.onnx");
        var e = Assert.Throws<CheckpointFormatException>(() => OnnxModel.Read(path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("cannot be opened", e.Problem);
    }
}
