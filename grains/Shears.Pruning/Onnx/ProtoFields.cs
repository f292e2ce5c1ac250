using System.Text;

namespace Shears.Pruning.Onnx;

/// <summary>
/// The fields of one protobuf message held in memory, each with the byte range of its whole encoding (key included),
/// so a message can be written back with some fields replaced and every other byte kept; and the encoders of the
/// few field kinds a rewritten ONNX graph needs.
/// </summary>
internal static class ProtoFields
{
    public readonly record struct Field(int Number, int WireType, int Start, int End, int PayloadStart, int PayloadLength, ulong Varint);

    /// <summary>The fields of the message in <paramref name="message"/>, in order. Throws <see cref="FormatException"/> on a malformed one.</summary>
    public static List<Field> Read(ReadOnlySpan<byte> message)
    {
        var fields = new List<Field>();
        int at = 0;
        while (at < message.Length)
        {
            int start = at;
            ulong key = ReadVarint(message, ref at);
            int number = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: { ulong v = ReadVarint(message, ref at); fields.Add(new(number, wire, start, at, at, 0, v)); break; }
                case 1: at += 8; Check(at, message.Length); fields.Add(new(number, wire, start, at, at - 8, 8, 0)); break;
                case 5: at += 4; Check(at, message.Length); fields.Add(new(number, wire, start, at, at - 4, 4, 0)); break;
                case 2:
                    {
                        ulong length = ReadVarint(message, ref at);
                        if (length > (ulong)(message.Length - at)) throw new FormatException("a length-delimited field runs past its message");
                        int payload = at;
                        at += (int)length;
                        fields.Add(new(number, wire, start, at, payload, (int)length, 0));
                        break;
                    }
                default: throw new FormatException($"wire type {wire} of field {number} is not supported");
            }
        }
        return fields;
    }

    private static void Check(int at, int length)
    {
        if (at > length) throw new FormatException("a fixed-width field runs past its message");
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> bytes, ref int at)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (at >= bytes.Length) throw new FormatException("a varint runs past its message");
            byte b = bytes[at++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw new FormatException("a varint is longer than 10 bytes");
    }

    public static string String(ReadOnlySpan<byte> message, Field f) => Encoding.UTF8.GetString(message.Slice(f.PayloadStart, f.PayloadLength));

    public static void Varint(Stream to, ulong value)
    {
        while (value >= 0x80)
        {
            to.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        to.WriteByte((byte)value);
    }

    public static void Key(Stream to, int field, int wire) => Varint(to, ((ulong)field << 3) | (uint)wire);

    public static void VarintField(Stream to, int field, long value)
    {
        Key(to, field, 0);
        Varint(to, unchecked((ulong)value));
    }

    public static void BytesField(Stream to, int field, ReadOnlySpan<byte> payload)
    {
        Key(to, field, 2);
        Varint(to, (ulong)payload.Length);
        to.Write(payload);
    }

    public static void StringField(Stream to, int field, string value) => BytesField(to, field, Encoding.UTF8.GetBytes(value));

    public static void MessageField(Stream to, int field, Action<Stream> build)
    {
        using var inner = new MemoryStream();
        build(inner);
        BytesField(to, field, inner.GetBuffer().AsSpan(0, (int)inner.Length));
    }
}
