using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>A dequantizer of compressed-tensors pack-quantized checkpoints written here from the format, independent of Shears' own.</summary>
internal static class PackQuantized
{
    /// <summary>
    /// Writes <paramref name="quantized"/> back as a dense checkpoint: each weight_packed unpacked field by field
    /// (value = field − 2^(bits−1), column j of a word in bits 4j…), zero points unpacked along rows, w = (q − zp) · scale
    /// rounded to the scale's dtype, column j in group g_idx[j] where weight_g_idx is stored, else j / group size. Returns the dense weights by name.
    /// </summary>
    public static Dictionary<string, float[]> Dequantize(string quantized, string dense)
    {
        var m = CheckpointReader.ReadManifest(quantized);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(quantized, "config.json")))!.AsObject();
        var weights = config["quantization_config"]!["config_groups"]!["group_0"]!["weights"]!;
        int bits = (int)weights["num_bits"]!;
        int? group = weights["group_size"]?.GetValue<int>();
        var tensors = new List<(string, TensorDType, long[], byte[])>();
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var t in m.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            if (t.Name.EndsWith(".weight_scale") || t.Name.EndsWith(".weight_zero_point") || t.Name.EndsWith(".weight_shape") || t.Name.EndsWith(".weight_g_idx")) continue;
            if (!t.Name.EndsWith(".weight_packed")) { tensors.Add((t.Name, t.DType, t.Shape, CheckpointReader.ReadTensor(m, t))); continue; }
            string module = t.Name[..^".weight_packed".Length];
            var shape = MemoryMarshal.Cast<byte, long>(CheckpointReader.ReadTensor(m, m.Get(module + ".weight_shape"))).ToArray();
            int rows = (int)shape[0], cols = (int)shape[1], per = 32 / bits;
            var packed = MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(m, t)).ToArray();
            var scaleEntry = m.Get(module + ".weight_scale");
            var scaleRaw = CheckpointReader.ReadTensor(m, scaleEntry);
            int groups = (int)scaleEntry.Shape[1];
            int[]? zeroWords = m.TryGet(module + ".weight_zero_point", out var z) ? MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(m, z)).ToArray() : null;
            int[]? groupIndex = m.TryGet(module + ".weight_g_idx", out var gi) ? MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(m, gi)).ToArray() : null;
            int wordsPerRow = (cols + per - 1) / per;
            var values = new float[rows * cols];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                {
                    int q = (int)(((uint)packed[r * wordsPerRow + c / per] >> (bits * (c % per))) & ((1u << bits) - 1)) - (1 << (bits - 1));
                    int g = groupIndex is not null ? groupIndex[c] : group is { } size ? c / size : 0;
                    float scale = scaleEntry.DType == TensorDType.BF16 ? FloatBits.BFloat16ToSingle(BitConverter.ToUInt16(scaleRaw, (r * groups + g) * 2)) : BitConverter.ToSingle(scaleRaw, (r * groups + g) * 4);
                    int zp = zeroWords is null ? 0 : (int)(((uint)zeroWords[r / per * groups + g] >> (bits * (r % per))) & ((1u << bits) - 1)) - (1 << (bits - 1));
                    float w = (q - zp) * scale;
                    values[r * cols + c] = scaleEntry.DType == TensorDType.BF16 ? FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(w)) : w;
                }
            result[module + ".weight"] = values;
            var raw = new byte[values.Length * scaleEntry.DType.ElementSize()];
            FloatBits.Store(values, scaleEntry.DType, raw);
            tensors.Add((module + ".weight", scaleEntry.DType, [rows, cols], raw));
        }
        Directory.CreateDirectory(dense);
        using (var writer = new SafetensorsWriter(Path.Combine(dense, "model.safetensors"), tensors.Select(x => (x.Item1, x.Item2, x.Item3)).ToArray()))
        {
            foreach (var x in tensors) writer.WriteTensor(x.Item1, x.Item4);
            writer.Complete();
        }
        config.Remove("quantization_config");
        File.WriteAllText(Path.Combine(dense, "config.json"), config.ToJsonString());
        return result;
    }
}
