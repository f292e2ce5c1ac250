using Shears.Pruning.Checkpoints;
using Shears.Pruning.Structured;

namespace Shears.Pruning.Onnx;

/// <summary>
/// Writes an ONNX model with structured units removed: each cut initializer (a float tensor with raw_data or external data, 1-D or 2-D)
/// is written again with its smaller dims and without the removed slices, each given shape constant (a one-element
/// int64 initializer with raw_data) with its new value, and a graph edit (<see cref="OnnxGraphEdit"/>: whole layers
/// out) leaves out nodes and initializers, inserts Identity nodes and renames initializers. Every other field of the
/// model and graph is copied byte for byte, except the graph's value_info (optional shape annotations, which the cuts
/// may make stale). The model is read into memory, and the output appears atomically; external data stays external
/// (<see cref="OnnxTensorData"/>).
/// </summary>
public static class OnnxRemovalWriter
{
    // onnx.proto field numbers.
    private const int GraphNode = 1, GraphInitializer = 5, GraphValueInfo = 13;
    private const int NodeInput = 1, NodeOutput = 2, NodeName = 3, NodeOpType = 4;
    private const int TensorDims = 1, TensorDataType = 2, TensorName = 8;
    private const int Float = 1, Int64 = 7;

    public static void Write(string input, string output, IReadOnlyCollection<TensorCut> cuts, IReadOnlyDictionary<string, long>? scalars = null,
        OnnxGraphEdit? edit = null)
    {
        ArgumentNullException.ThrowIfNull(cuts);
        scalars ??= new Dictionary<string, long>();
        edit ??= OnnxGraphEdit.None;
        var byName = cuts.ToDictionary(c => c.Tensor, StringComparer.Ordinal);
        var file = OnnxGraphFile.Read(input);
        var (graph, graphFields) = (file.Graph, file.GraphFields);
        using var data = OnnxTensorData.Open(input, file, output);
        var bypassAt = edit.Bypasses.ToLookup(b => b.Before);

        var done = new HashSet<string>(StringComparer.Ordinal);
        using var newGraph = new MemoryStream();
        int node = -1;
        foreach (var f in graphFields)
        {
            if (f.Number == GraphValueInfo) continue;
            if (f.Number == GraphNode && f.WireType == 2)
            {
                node++;
                foreach (var b in bypassAt[node])
                    ProtoFields.MessageField(newGraph, GraphNode, o =>
                    {
                        ProtoFields.StringField(o, NodeInput, b.Input);
                        ProtoFields.StringField(o, NodeOutput, b.Output);
                        ProtoFields.StringField(o, NodeName, b.Name);
                        ProtoFields.StringField(o, NodeOpType, "Identity");
                    });
                if (edit.DroppedNodes.Contains(node)) continue;
                if (edit.Renames.Count > 0 && RenamedNode(graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray(), edit.Renames) is { } renamed)
                {
                    ProtoFields.BytesField(newGraph, GraphNode, renamed);
                    continue;
                }
            }
            if (f.Number == GraphInitializer && f.WireType == 2)
            {
                var t = graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray();
                var tf = ProtoFields.Read(t);
                string name = tf.Where(x => x.Number == TensorName).Select(x => ProtoFields.String(t, x)).LastOrDefault() ?? "";
                if (edit.DroppedInitializers.Contains(name))
                {
                    done.Add(name);
                    continue;
                }
                string newName = edit.Renames.GetValueOrDefault(name, name);
                if (scalars.TryGetValue(name, out long value))
                {
                    var dims = tf.Where(x => x.Number == TensorDims && x.WireType == 0).Select(x => (long)x.Varint).ToArray();
                    long type = tf.Where(x => x.Number == TensorDataType).Select(x => (long)x.Varint).LastOrDefault();
                    var raw = data.Raw(name, t, tf);
                    if (type != Int64 || dims.Aggregate(1L, (a, b) => a * b) != 1 || raw?.Length != sizeof(long)
                        || tf.Any(x => x.Number == TensorDims && x.WireType != 0))
                        throw new CheckpointFormatException(input, name, "a rewritten shape constant must be a one-element int64 tensor with raw_data or external data");
                    var bytes = new byte[sizeof(long)];
                    System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
                    WriteTensor(data, newGraph, dims, Int64, newName, bytes, data.IsExternal(name));
                    done.Add(name);
                    continue;
                }
                if (byName.TryGetValue(name, out var cut))
                {
                    if (tf.Any(x => x.Number == TensorDims && x.WireType != 0))
                        throw new CheckpointFormatException(input, name, "the initializer's dims are packed; a cut initializer needs them unpacked");
                    var dims = tf.Where(x => x.Number == TensorDims).Select(x => (long)x.Varint).ToArray();
                    long type = tf.Where(x => x.Number == TensorDataType).Select(x => (long)x.Varint).LastOrDefault();
                    var raw = type == Float && dims.Length is 1 or 2 ? data.Raw(name, t, tf) : null;
                    if (raw is null || raw.LongLength != dims.Aggregate(4L, (a, b) => a * b))
                        throw new CheckpointFormatException(input, name, "a cut initializer must be a 1-D or 2-D float tensor with raw_data or external data");
                    var bytes = cut.Apply(raw, dims, sizeof(float));
                    WriteTensor(data, newGraph, cut.Shape(dims), Float, newName, bytes, data.IsExternal(name));
                    done.Add(name);
                    continue;
                }
                if (newName != name)
                {
                    // Renamed only: every field as it was, the name last.
                    data.Copy(newGraph, GraphInitializer, name, t, tf, o => ProtoFields.StringField(o, TensorName, newName));
                    done.Add(name);
                    continue;
                }
                if (data.IsExternal(name))
                {
                    data.Copy(newGraph, GraphInitializer, name, t, tf);
                    continue;
                }
            }
            newGraph.Write(graph, f.Start, f.End - f.Start);
        }
        foreach (string name in byName.Keys.Concat(scalars.Keys).Concat(edit.DroppedInitializers).Concat(edit.Renames.Keys).Where(n => !done.Contains(n)))
            throw new CheckpointFormatException(input, name, "no initializer of this name in the main graph to rewrite");

        using var newModel = file.WithGraph(newGraph);
        data.Commit();
        OnnxGraphFile.WriteAtomically(output, newModel);
    }

    private static void WriteTensor(OnnxTensorData data, Stream graph, IEnumerable<long> dims, int type, string name, byte[] raw, bool external) =>
        data.Write(graph, GraphInitializer, o =>
        {
            foreach (long d in dims) ProtoFields.VarintField(o, TensorDims, d);
            ProtoFields.VarintField(o, TensorDataType, type);
            ProtoFields.StringField(o, TensorName, name);
        }, raw, external);

    /// <summary>The node message with renamed inputs in place of the old ones, every other field as it was; null when it reads none of them.</summary>
    private static byte[]? RenamedNode(byte[] message, IReadOnlyDictionary<string, string> renames)
    {
        var fields = ProtoFields.Read(message);
        if (!fields.Any(x => x.Number == NodeInput && x.WireType == 2 && renames.ContainsKey(ProtoFields.String(message, x)))) return null;
        using var o = new MemoryStream();
        foreach (var x in fields)
        {
            if (x.Number == NodeInput && x.WireType == 2 && renames.TryGetValue(ProtoFields.String(message, x), out var renamed))
                ProtoFields.StringField(o, NodeInput, renamed);
            else o.Write(message, x.Start, x.End - x.Start);
        }
        return o.ToArray();
    }
}
