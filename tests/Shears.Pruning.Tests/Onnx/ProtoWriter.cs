using System.Buffers.Binary;
using System.Text;

namespace Shears.Pruning.Tests.Onnx;

/// <summary>A tiny protobuf encoder for building ONNX files by hand, including broken ones.</summary>
internal sealed class ProtoWriter
{
    private readonly MemoryStream _bytes = new();

    public byte[] ToArray() => _bytes.ToArray();

    public ProtoWriter Varint(int field, ulong value) => Key(field, 0).RawVarint(value);

    public ProtoWriter Varint(int field, long value) => Varint(field, unchecked((ulong)value));

    public ProtoWriter Fixed32(int field, uint value)
    {
        Key(field, 5);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        _bytes.Write(b);
        return this;
    }

    public ProtoWriter Fixed64(int field, ulong value)
    {
        Key(field, 1);
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        _bytes.Write(b);
        return this;
    }

    public ProtoWriter Bytes(int field, byte[] payload) => Key(field, 2).RawVarint((ulong)payload.Length).Raw(payload);

    public ProtoWriter String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    public ProtoWriter Message(int field, Action<ProtoWriter> build)
    {
        var inner = new ProtoWriter();
        build(inner);
        return Bytes(field, inner.ToArray());
    }

    public ProtoWriter PackedVarints(int field, IEnumerable<long> values)
    {
        var inner = new ProtoWriter();
        foreach (var v in values)
        {
            inner.RawVarint(unchecked((ulong)v));
        }
        return Bytes(field, inner.ToArray());
    }

    /// <summary>A field key with any wire type, valid or not.</summary>
    public ProtoWriter Key(int field, int wireType) => RawVarint(((ulong)field << 3) | (uint)wireType);

    public ProtoWriter RawVarint(ulong value)
    {
        while (value >= 0x80)
        {
            _bytes.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        _bytes.WriteByte((byte)value);
        return this;
    }

    public ProtoWriter Raw(byte[] bytes)
    {
        _bytes.Write(bytes);
        return this;
    }
}

/// <summary>ONNX messages for <see cref="ProtoWriter"/>, with the field numbers of onnx.proto.</summary>
internal static class OnnxBytes
{
    public const int FLOAT = 1, INT64 = 7, STRING = 8, FLOAT16 = 10, BFLOAT16 = 16; // TensorProto.DataType

    /// <summary>A ModelProto: ir_version, producer, opset 13, then the graph (last, so every prefix lacks it).</summary>
    public static byte[] Model(Action<ProtoWriter> graph) =>
        new ProtoWriter()
            .Varint(1, 8L)
            .String(2, "shears-tests")
            .Message(8, o => o.String(1, "").Varint(2, 13L))
            .Message(7, graph)
            .ToArray();

    public static Action<ProtoWriter> RawTensor(string name, int dataType, long[] dims, byte[] raw) => t =>
    {
        t.PackedVarints(1, dims).Varint(2, (long)dataType).String(8, name).Bytes(9, raw);
    };

    public static Action<ProtoWriter> Node(string opType, string name, string[] inputs, string[] outputs, params (string Name, long Value)[] ints) => n =>
    {
        foreach (var i in inputs)
        {
            n.String(1, i);
        }
        foreach (var o in outputs)
        {
            n.String(2, o);
        }
        n.String(3, name).String(4, opType);
        foreach (var (attr, value) in ints)
        {
            n.Message(5, a => a.String(1, attr).Varint(3, value).Varint(20, 2L));
        }
    };

    /// <summary>A graph of the given initializers (field 5) and nodes (field 1).</summary>
    public static Action<ProtoWriter> Graph(IEnumerable<Action<ProtoWriter>> initializers, IEnumerable<Action<ProtoWriter>> nodes) => g =>
    {
        foreach (var node in nodes)
        {
            g.Message(1, node);
        }
        g.String(2, "test-graph");
        foreach (var init in initializers)
        {
            g.Message(5, init);
        }
    };

    public static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
