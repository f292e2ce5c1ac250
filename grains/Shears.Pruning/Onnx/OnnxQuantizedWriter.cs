using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Onnx;

/// <summary>
/// Writes an ONNX model whose MatMuls with a constant float weight B [K, N] run quantized, as ONNX Runtime runs them:
/// <list type="bullet">
/// <item><c>W8A8</c> as <c>onnxruntime.quantization.quantize_dynamic</c> writes a MatMul: <c>DynamicQuantizeLinear(A)</c> →
/// <c>MatMulInteger(A_q, B_q, a_zp, b_zp)</c> → <c>Cast(float)</c> → <c>Mul</c> by a_scale × b_scale, with one symmetric
/// scale per output column (b_scale float [N]). The symmetric int8 values q are stored as uint8 q + 128 with a zero point of
/// 128 (b_zp uint8 [N]): the same integers, but ONNX Runtime then takes its u8 × u8 kernels, whereas its u8 × s8 kernels on
/// x86-64 CPUs without VNNI add pairs of products in saturating 16-bit lanes (VPMADDUBSW) and return wrong sums once a
/// pair exceeds 32767 (ONNX Runtime's quantization guide, "saturation" on AVX2/AVX-512);</item>
/// <item><c>W4A16</c> as <c>com.microsoft.MatMulNBits</c>: B uint8 [N, ceil(K/block), block/2], each output column's K
/// values in blocks of the scheme's group size, packed along K with the first value in the low nibble, stored as
/// q + 8 (the operator's default zero point), scales float [N · blocks].</item>
/// </list>
/// Scales and values follow <see cref="GroupQuantizer"/> in fp32 (what the kernels dequantize with), so a weight of 0.0
/// dequantizes to exactly 0.0. Every other field of the model and graph is copied byte for byte; the model file is read into
/// memory (encoders of tens to hundreds of MB), and the output appears atomically; external data stays external, the
/// quantized weights' tensors stored where their weights were (<see cref="OnnxTensorData"/>).
/// </summary>
public static class OnnxQuantizedWriter
{
    public sealed record TensorBytes(string Name, long FloatBytes, long QuantizedBytes);

    // onnx.proto field numbers and TensorProto data types.
    private const int ModelGraph = 7, ModelOpset = 8, GraphNode = 1, GraphInitializer = 5;
    private const int NodeInput = 1, NodeOutput = 2, NodeName = 3, NodeOpType = 4, NodeAttribute = 5, NodeDomain = 7;
    private const int TensorDims = 1, TensorDataType = 2, TensorName = 8;
    private const int Float = 1, UInt8 = 2;
    /// <summary>W8A8: the zero point of the uint8 weights, so that stored byte − 128 is the symmetric int8 value.</summary>
    public const int UInt8ZeroPoint = 128;
    public const string MicrosoftDomain = "com.microsoft";

    /// <summary>
    /// Quantizes the initializers <paramref name="weights"/> (float, 2-D, each the B input of MatMul nodes only) of
    /// <paramref name="input"/> into <paramref name="output"/>. Returns each weight's bytes before and after.
    /// </summary>
    public static IReadOnlyList<TensorBytes> Write(string input, string output, IReadOnlyCollection<string> weights, QuantScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (scheme.Name is not (QuantScheme.W8A8 or QuantScheme.W4A16))
            throw new ArgumentException($"--quantize {scheme.Name}: ONNX models are quantized as {QuantScheme.W8A8} or {QuantScheme.W4A16}");
        if (scheme.Name == QuantScheme.W4A16 && (scheme.GroupSize < 16 || (scheme.GroupSize & (scheme.GroupSize - 1)) != 0))
            throw new ArgumentException($"--group-size {scheme.GroupSize}: MatMulNBits takes a block size that is a power of 2, at least 16");
        var file = OnnxGraphFile.Read(input);
        var (model, modelFields, graph, graphFields) = (file.Model, file.ModelFields, file.Graph, file.GraphFields);
        using var data = OnnxTensorData.Open(input, file, output);

        var targets = weights.ToHashSet(StringComparer.Ordinal);
        // Each target's proto (which holds its raw_data when inline) and shape; its floats are read one weight at a time
        // below, so the writer holds one weight's floats beside the quantized tensors, not every target's at once.
        var initializers = new Dictionary<string, (byte[] Proto, List<ProtoFields.Field> Fields, long K, long N)>(StringComparer.Ordinal);
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        var nodes = new List<(ProtoFields.Field Field, string[] Inputs, string[] Outputs, string Name, string Op, string Domain)>();
        foreach (var f in graphFields)
        {
            if (f.Number == GraphInitializer && f.WireType == 2)
            {
                var t = graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray();
                var tf = ProtoFields.Read(t);
                string name = tf.Where(x => x.Number == TensorName).Select(x => ProtoFields.String(t, x)).LastOrDefault() ?? "";
                if (!targets.Contains(name)) continue;
                var dims = Dims(t, tf);
                long type = tf.Where(x => x.Number == TensorDataType).Select(x => (long)x.Varint).LastOrDefault();
                if (type != Float || dims.Length != 2) throw NotAFloatMatrix(input, name);
                initializers[name] = (t, tf, dims[0], dims[1]);
            }
            else if (f.Number == GraphNode && f.WireType == 2)
            {
                var n = graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray();
                var nf = ProtoFields.Read(n);
                string[] ins = nf.Where(x => x.Number == NodeInput).Select(x => ProtoFields.String(n, x)).ToArray();
                string[] outs = nf.Where(x => x.Number == NodeOutput).Select(x => ProtoFields.String(n, x)).ToArray();
                string nodeName = nf.Where(x => x.Number == NodeName).Select(x => ProtoFields.String(n, x)).LastOrDefault() ?? "";
                string op = nf.Where(x => x.Number == NodeOpType).Select(x => ProtoFields.String(n, x)).LastOrDefault() ?? "";
                string domain = nf.Where(x => x.Number == NodeDomain).Select(x => ProtoFields.String(n, x)).LastOrDefault() ?? "";
                nodes.Add((f, ins, outs, nodeName, op, domain));
                foreach (var i in ins) uses[i] = uses.GetValueOrDefault(i) + 1;
            }
        }
        foreach (string name in targets)
        {
            if (!initializers.ContainsKey(name)) throw new CheckpointFormatException(input, name, "no float initializer of this name in the main graph");
            int asB = nodes.Count(n => n.Op == "MatMul" && n.Domain is "" or "ai.onnx" && n.Inputs.Length == 2 && n.Inputs[1] == name);
            if (asB == 0 || asB != uses.GetValueOrDefault(name))
                throw new CheckpointFormatException(input, name, "the weight is not only the B input of MatMul nodes; only such weights are quantized");
        }

        var quantized = new Dictionary<string, Quantized>(StringComparer.Ordinal);
        foreach (var (name, (proto, fields, k, n)) in initializers)
        {
            var raw = data.Raw(name, proto, fields);
            if (raw is null || raw.LongLength != k * n * 4) throw NotAFloatMatrix(input, name);
            quantized[name] = Quantize(name, MemoryMarshal.Cast<byte, float>(raw).ToArray(), k, n, scheme);
        }
        using var newGraph = new MemoryStream();
        int counter = 0;
        foreach (var f in graphFields)
        {
            if (f.Number == GraphInitializer && f.WireType == 2)
            {
                if (IsTarget(graph, f, targets)) continue;
                var t = graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray();
                var tf = ProtoFields.Read(t);
                string name = tf.Where(x => x.Number == TensorName).Select(x => ProtoFields.String(t, x)).LastOrDefault() ?? "";
                if (data.IsExternal(name))
                {
                    data.Copy(newGraph, GraphInitializer, name, t, tf);
                    continue;
                }
            }
            if (f.Number == GraphNode && f.WireType == 2 && nodes.FirstOrDefault(n => n.Field.Start == f.Start) is { Op: "MatMul" } node
                && node.Inputs.Length == 2 && quantized.TryGetValue(node.Inputs[1], out var q))
            {
                string prefix = (node.Name.Length > 0 ? node.Name : node.Outputs[0]) + $"_quant{counter++}";
                if (scheme.DynamicActivations) WriteDynamicInt8(newGraph, prefix, node.Inputs[0], node.Outputs[0], q);
                else WriteNBits(newGraph, prefix, node.Inputs[0], node.Outputs[0], q, scheme.GroupSize);
                continue;
            }
            newGraph.Write(graph, f.Start, f.End - f.Start);
        }
        // The weight's new tensors are stored where the weight was: inline, or in the data file.
        foreach (var (weight, q) in quantized)
            foreach (var (name, type, dims, raw) in q.Initializers)
                data.Write(newGraph, GraphInitializer, t =>
                {
                    foreach (long d in dims) ProtoFields.VarintField(t, TensorDims, d);
                    ProtoFields.VarintField(t, TensorDataType, type);
                    ProtoFields.StringField(t, TensorName, name);
                }, raw, data.IsExternal(weight));

        bool hasMicrosoft = modelFields.Where(f => f.Number == ModelOpset && f.WireType == 2)
            .Select(f => model.AsSpan(f.PayloadStart, f.PayloadLength).ToArray())
            .Any(o => ProtoFields.Read(o).Any(x => x.Number == 1 && ProtoFields.String(o, x) == MicrosoftDomain));
        using var newModel = file.WithGraph(newGraph, m =>
        {
            if (!scheme.DynamicActivations && !hasMicrosoft)
                ProtoFields.MessageField(m, ModelOpset, o => { ProtoFields.StringField(o, 1, MicrosoftDomain); ProtoFields.VarintField(o, 2, 1); });
        });
        data.Commit();
        OnnxGraphFile.WriteAtomically(output, newModel);
        return quantized.Select(kv => new TensorBytes(kv.Key, initializers[kv.Key].K * initializers[kv.Key].N * 4, kv.Value.Initializers.Sum(i => (long)i.Raw.Length))).ToArray();
    }

    private static CheckpointFormatException NotAFloatMatrix(string input, string name) =>
        new(input, name, "a quantized MatMul weight must be a 2-D float initializer with raw_data or external data");

    private static bool IsTarget(byte[] graph, ProtoFields.Field f, HashSet<string> targets)
    {
        var t = graph.AsSpan(f.PayloadStart, f.PayloadLength).ToArray();
        return ProtoFields.Read(t).Where(x => x.Number == TensorName).Select(x => ProtoFields.String(t, x)).LastOrDefault() is { } name && targets.Contains(name);
    }

    private static long[] Dims(ReadOnlySpan<byte> tensor, List<ProtoFields.Field> fields)
    {
        var dims = new List<long>();
        foreach (var x in fields.Where(x => x.Number == TensorDims))
        {
            if (x.WireType == 0) { dims.Add((long)x.Varint); continue; }
            // Packed: the payload is a run of varints.
            foreach (var v in ProtoFields.Read(PackedAsFields(tensor.Slice(x.PayloadStart, x.PayloadLength)))) dims.Add((long)v.Varint);
        }
        return dims.ToArray();
    }

    // A packed run of varints read as fields: each value gets a key of field 1, wire type 0, in front.
    private static byte[] PackedAsFields(ReadOnlySpan<byte> packed)
    {
        using var s = new MemoryStream();
        int at = 0;
        while (at < packed.Length)
        {
            s.WriteByte(0x08);
            do { s.WriteByte(packed[at]); } while ((packed[at++] & 0x80) != 0 && at < packed.Length);
        }
        return s.ToArray();
    }

    private sealed record Quantized(string Weight, long K, long N, List<(string Name, int Type, long[] Dims, byte[] Raw)> Initializers);

    /// <summary>The quantized initializers of one [K, N] weight: each output column n quantized along K.</summary>
    public static (sbyte[] Values, QuantParams[] Groups) QuantizeColumns(float[] values, long k, long n, QuantScheme scheme)
    {
        int K = checked((int)k), N = checked((int)n), groups = checked((int)scheme.GroupsPerRow(K));
        var q = new sbyte[(long)K * N]; // column-major: [N, K]
        var p = new QuantParams[(long)N * groups];
        var column = new float[K];
        for (int c = 0; c < N; c++)
        {
            for (int r = 0; r < K; r++) column[r] = values[(long)r * N + c];
            GroupQuantizer.QuantizeRow(column, scheme, TensorDType.F32, q.AsSpan(c * K, K), p.AsSpan(c * groups, groups));
        }
        return (q, p);
    }

    private static Quantized Quantize(string name, float[] values, long k, long n, QuantScheme scheme)
    {
        var (q, p) = QuantizeColumns(values, k, n, scheme);
        int K = (int)k, N = (int)n, groups = (int)scheme.GroupsPerRow(K);
        var list = new List<(string, int, long[], byte[])>();
        if (scheme.DynamicActivations)
        {
            var b = new byte[(long)K * N];
            for (int c = 0; c < N; c++)
                for (int r = 0; r < K; r++) b[(long)r * N + c] = (byte)(q[c * K + r] + UInt8ZeroPoint);
            list.Add((name + "_quantized", UInt8, [K, N], b));
            list.Add((name + "_scale", Float, [N], MemoryMarshal.AsBytes(p.Select(g => g.Scale).ToArray().AsSpan()).ToArray()));
            list.Add((name + "_zero_point", UInt8, [N], Enumerable.Repeat((byte)UInt8ZeroPoint, N).ToArray()));
        }
        else
        {
            int block = scheme.GroupSize, blob = block / 2;
            var b = new byte[(long)N * groups * blob];
            for (int c = 0; c < N; c++)
                for (int g = 0; g < groups; g++)
                    for (int j = 0; j < block; j++)
                    {
                        int r = g * block + j;
                        int u = r < K ? q[c * K + r] + 8 : 8; // padding past K: the zero point, so it adds nothing
                        long at = ((long)c * groups + g) * blob + j / 2;
                        b[at] |= (byte)(j % 2 == 0 ? u : u << 4);
                    }
            list.Add((name + "_quantized", UInt8, [N, groups, blob], b));
            list.Add((name + "_scale", Float, [(long)N * groups], MemoryMarshal.AsBytes(p.Select(g => g.Scale).ToArray().AsSpan()).ToArray()));
        }
        return new Quantized(name, k, n, list);
    }

    private static void WriteNode(Stream graph, string op, string domain, string name, string[] inputs, string[] outputs, params (string Name, long Value)[] ints) =>
        ProtoFields.MessageField(graph, GraphNode, n =>
        {
            foreach (var i in inputs) ProtoFields.StringField(n, NodeInput, i);
            foreach (var o in outputs) ProtoFields.StringField(n, NodeOutput, o);
            ProtoFields.StringField(n, NodeName, name);
            ProtoFields.StringField(n, NodeOpType, op);
            foreach (var (attribute, value) in ints)
                ProtoFields.MessageField(n, NodeAttribute, a => { ProtoFields.StringField(a, 1, attribute); ProtoFields.VarintField(a, 3, value); ProtoFields.VarintField(a, 20, 2); });
            if (domain.Length > 0) ProtoFields.StringField(n, NodeDomain, domain);
        });

    private static void WriteDynamicInt8(Stream graph, string prefix, string a, string y, Quantized q)
    {
        string aq = prefix + "_A_quantized", aScale = prefix + "_A_scale", aZero = prefix + "_A_zero_point";
        WriteNode(graph, "DynamicQuantizeLinear", "", prefix + "_DynamicQuantizeLinear", [a], [aq, aScale, aZero]);
        WriteNode(graph, "MatMulInteger", "", prefix + "_MatMulInteger", [aq, q.Weight + "_quantized", aZero, q.Weight + "_zero_point"], [prefix + "_int32"]);
        WriteNode(graph, "Cast", "", prefix + "_Cast", [prefix + "_int32"], [prefix + "_float"], ("to", Float));
        WriteNode(graph, "Mul", "", prefix + "_ScaleMul", [aScale, q.Weight + "_scale"], [prefix + "_scale"]);
        WriteNode(graph, "Mul", "", prefix + "_OutputMul", [prefix + "_float", prefix + "_scale"], [y]);
    }

    private static void WriteNBits(Stream graph, string prefix, string a, string y, Quantized q, int block) =>
        WriteNode(graph, "MatMulNBits", MicrosoftDomain, prefix + "_MatMulNBits", [a, q.Weight + "_quantized", q.Weight + "_scale"], [y],
            ("K", q.K), ("N", q.N), ("bits", 4), ("block_size", block), ("accuracy_level", 0));
}
