namespace Shears.Testing;

/// <summary>
/// Rewrites an ONNX model so that its larger initializers keep their bytes in a separate file, as exporters do for models
/// past protobuf's 2 GB (onnx.external_data_helper's layout: raw_data removed, data_location EXTERNAL, external_data
/// entries location/offset/length, offsets aligned to <c>align</c> bytes). A protobuf reader and writer of its own, so
/// the tests do not check Shears' parser against itself.
/// </summary>
public static class OnnxExternalizer
{
    private const int ModelGraph = 7, GraphInitializer = 5, TensorRawData = 9, TensorExternalData = 13, TensorDataLocation = 14;

    /// <summary>Writes <paramref name="outputModel"/> and, beside it, <paramref name="dataFileName"/>; returns how many initializers moved.</summary>
    public static int Externalize(string inputModel, string outputModel, string dataFileName, int threshold = 1024, int align = 4096)
    {
        var model = File.ReadAllBytes(inputModel);
        using var data = new FileStream(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outputModel))!, dataFileName), FileMode.Create);
        int moved = 0;
        byte[] Tensor(byte[] tensor)
        {
            var fields = Fields(tensor);
            var raw = fields.FirstOrDefault(f => f.Number == TensorRawData);
            if (raw.Payload is null || raw.Payload.Length < threshold) return tensor;
            long offset = (data.Length + align - 1) / align * align;
            data.SetLength(offset);
            data.Position = offset;
            data.Write(raw.Payload);
            moved++;
            var rebuilt = new MemoryStream();
            foreach (var f in fields.Where(f => f.Number != TensorRawData)) rebuilt.Write(f.Bytes);
            foreach (var (key, value) in new[] { ("location", dataFileName), ("offset", offset.ToString()), ("length", raw.Payload.Length.ToString()) })
            {
                var entry = new MemoryStream();
                Bytes(entry, 1, System.Text.Encoding.UTF8.GetBytes(key));
                Bytes(entry, 2, System.Text.Encoding.UTF8.GetBytes(value));
                Bytes(rebuilt, TensorExternalData, entry.ToArray());
            }
            Varint(rebuilt, (TensorDataLocation << 3) | 0);
            Varint(rebuilt, 1);
            return rebuilt.ToArray();
        }
        byte[] Graph(byte[] graph)
        {
            var rebuilt = new MemoryStream();
            foreach (var f in Fields(graph))
                if (f.Number == GraphInitializer && f.Payload is not null) Bytes(rebuilt, GraphInitializer, Tensor(f.Payload));
                else rebuilt.Write(f.Bytes);
            return rebuilt.ToArray();
        }
        var output = new MemoryStream();
        foreach (var f in Fields(model))
            if (f.Number == ModelGraph && f.Payload is not null) Bytes(output, ModelGraph, Graph(f.Payload));
            else output.Write(f.Bytes);
        File.WriteAllBytes(outputModel, output.ToArray());
        return moved;
    }

    private readonly record struct Field(int Number, byte[] Bytes, byte[]? Payload);

    private static List<Field> Fields(byte[] message)
    {
        var fields = new List<Field>();
        int at = 0;
        while (at < message.Length)
        {
            int start = at;
            ulong key = ReadVarint(message, ref at);
            int number = (int)(key >> 3), wire = (int)(key & 7);
            byte[]? payload = null;
            switch (wire)
            {
                case 0: ReadVarint(message, ref at); break;
                case 1: at += 8; break;
                case 5: at += 4; break;
                case 2:
                    int length = checked((int)ReadVarint(message, ref at));
                    payload = message.AsSpan(at, length).ToArray();
                    at += length;
                    break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
            fields.Add(new Field(number, message[start..at], payload));
        }
        return fields;
    }

    private static ulong ReadVarint(byte[] bytes, ref int at)
    {
        ulong value = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = bytes[at++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return value;
        }
    }

    private static void Varint(Stream to, ulong value)
    {
        while (value >= 0x80) { to.WriteByte((byte)(value | 0x80)); value >>= 7; }
        to.WriteByte((byte)value);
    }

    private static void Bytes(Stream to, int field, byte[] payload)
    {
        Varint(to, ((ulong)field << 3) | 2);
        Varint(to, (ulong)payload.Length);
        to.Write(payload);
    }
}
