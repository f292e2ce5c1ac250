using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// Reads compressed-tensors checkpoints with integer weights — <c>pack-quantized</c> (what Shears writes: int32
/// <c>weight_packed</c>, packed zero points) and <c>int-quantized</c> (int8 <c>weight</c>, int8 zero points) — and
/// writes them back dense: each quantized Linear's <c>weight</c> in its scale's dtype with w = (q − zp) · scale (the
/// product rounded once to that dtype, which is what the loaders' (q − zp) · scale in that dtype gives: q − zp is an
/// integer of at most 9 bits, exact in bf16 and fp16), the group of input column j being g_idx[j] where
/// <c>weight_g_idx</c> is stored, else j / group size. Every other tensor, the file layout and the companion files are
/// kept; config.json loses its quantization_config. Refused, naming the file and the field or tensor: other
/// compression formats, non-integer or other-width weights, several config groups with different weights, a quantized
/// module with a missing or misshapen scale, zero point, shape or group index.
/// </summary>
public static class Dequantizer
{
    public const string IntQuantized = "int-quantized";

    /// <summary>The weights' parameters of a quantized checkpoint, from its config.json.</summary>
    public sealed record Scheme(string Format, int Bits, bool Symmetric, int? GroupSize);

    /// <summary>The scheme of a checkpoint whose config.json declares a compressed-tensors integer quantization; null when it declares none.</summary>
    public static Scheme? Read(string folder)
    {
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) return null;
        JsonObject? config;
        try { config = JsonNode.Parse(File.ReadAllText(path)) as JsonObject; }
        catch (JsonException e) { throw new CheckpointFormatException(path, null, $"config.json is not valid JSON: {e.Message}"); }
        if (config?["quantization_config"] is not JsonObject q) return null;
        string Field(string name) => $"quantization_config.{name}";
        if (q["quant_method"]?.GetValue<string>() is not CompressedTensorsConfig.QuantMethod)
            throw new CheckpointFormatException(path, null, $"{Field("quant_method")} is '{q["quant_method"]}': only {CompressedTensorsConfig.QuantMethod} checkpoints are read");
        var groups = (q["config_groups"] as JsonObject)?.Select(g => g.Value as JsonObject).ToArray();
        if (groups is not { Length: > 0 } || groups.Any(g => g is null))
            throw new CheckpointFormatException(path, null, $"{Field("config_groups")} is missing or not a set of objects");
        Scheme? scheme = null;
        foreach (var (name, group) in ((JsonObject)q["config_groups"]!).Select(g => (g.Key, (JsonObject)g.Value!)))
        {
            string format = group["format"]?.GetValue<string>() ?? q["format"]?.GetValue<string>() ?? "";
            if (format is not (CompressedTensorsConfig.Format or IntQuantized))
                throw new CheckpointFormatException(path, null, $"{Field($"config_groups.{name}.format")} is '{format}': only {CompressedTensorsConfig.Format} and {IntQuantized} are read");
            if (group["weights"] is not JsonObject w)
                throw new CheckpointFormatException(path, null, $"{Field($"config_groups.{name}.weights")} is missing: only weight quantization is read");
            string type = w["type"]?.GetValue<string>() ?? "";
            int bits = w["num_bits"]?.GetValue<int>() ?? 0;
            if (type != "int" || bits is not (4 or 8) || format == IntQuantized && bits != 8)
                throw new CheckpointFormatException(path, null, $"{Field($"config_groups.{name}.weights")}: {type} weights of {bits} bits in {format}; read are int4 or int8 (pack-quantized) and int8 (int-quantized)");
            string strategy = w["strategy"]?.GetValue<string>() ?? "";
            if (strategy is not ("group" or "channel"))
                throw new CheckpointFormatException(path, null, $"{Field($"config_groups.{name}.weights.strategy")} is '{strategy}': read are group and channel");
            int? size = strategy == "group" ? w["group_size"]?.GetValue<int>() ?? throw new CheckpointFormatException(path, null, $"{Field($"config_groups.{name}.weights.group_size")} is missing") : null;
            var next = new Scheme(format, bits, w["symmetric"]?.GetValue<bool>() ?? true, size);
            if (scheme is not null && scheme != next)
                throw new CheckpointFormatException(path, null, $"{Field("config_groups")}: groups with different weights ({scheme} and {next}) are not read");
            scheme = next;
        }
        return scheme;
    }

    /// <summary>Writes <paramref name="input"/> dense into <paramref name="output"/> (created; written into a temporary folder, renamed when complete). Returns the modules dequantized.</summary>
    public static IReadOnlyList<string> Write(string input, string output)
    {
        var scheme = Read(input) ?? throw new CheckpointFormatException(Path.Combine(input, "config.json"), null, "config.json declares no quantization_config");
        var m = CheckpointReader.ReadManifest(input);
        var modules = Modules(m, scheme);
        string temp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, $".{Path.GetFileName(Path.GetFullPath(output))}.dequantize-tmp");
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        try
        {
            var weightNames = new Dictionary<string, string>(StringComparer.Ordinal); // new tensor → file, for the index
            foreach (var file in m.Files)
            {
                var inFile = m.Tensors.Where(t => t.FileName == file.FileName).OrderBy(t => t.FileOffset).ToArray();
                var layout = new List<(string Name, TensorDType DType, long[] Shape, Func<byte[]> Data)>();
                foreach (var t in inFile)
                {
                    if (modules.TryGetValue(t.Name, out var module))
                        layout.Add((module.Name + ".weight", module.Scale.DType, [module.Rows, module.Columns], () => Dense(m, module, scheme)));
                    else if (!IsPart(t.Name, modules))
                        layout.Add((t.Name, t.DType, t.Shape, () => CheckpointReader.ReadTensor(m, t)));
                }
                using var writer = new SafetensorsWriter(Path.Combine(temp, file.FileName), layout.Select(x => (x.Name, x.DType, x.Shape)).ToArray());
                foreach (var (name, _, _, data) in layout)
                {
                    writer.WriteTensor(name, data());
                    weightNames[name] = file.FileName;
                }
                writer.Complete();
            }
            if (m.IndexFileName is { } index) WriteIndex(Path.Combine(temp, index), weightNames, temp);
            foreach (string companion in m.CompanionFiles)
            {
                string target = Path.Combine(temp, companion);
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (companion == "config.json")
                {
                    var config = JsonNode.Parse(File.ReadAllText(m.PathOf(companion)))!.AsObject();
                    config.Remove("quantization_config");
                    File.WriteAllText(target, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                }
                else File.Copy(m.PathOf(companion), target);
            }
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
            Directory.Move(temp, output);
        }
        catch
        {
            Directory.Delete(temp, recursive: true);
            throw;
        }
        return modules.Values.Select(v => v.Name).Order(StringComparer.Ordinal).ToArray();
    }

    private sealed record Module(string Name, TensorEntry Weight, TensorEntry Scale, TensorEntry? ZeroPoint, TensorEntry? GroupIndex, int Rows, int Columns);

    private static readonly string[] Parts = [".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx"];

    private static bool IsPart(string name, Dictionary<string, Module> modules) =>
        Parts.FirstOrDefault(p => name.EndsWith(p, StringComparison.Ordinal)) is { } part
        && modules.Values.Any(v => v.Name == name[..^part.Length]);

    /// <summary>The quantized modules by the name of their integer weight tensor, each checked against the format.</summary>
    private static Dictionary<string, Module> Modules(CheckpointManifest m, Scheme scheme)
    {
        bool packed = scheme.Format == CompressedTensorsConfig.Format;
        string weightSuffix = packed ? QuantizedLayout.PackedSuffix : ".weight";
        var result = new Dictionary<string, Module>(StringComparer.Ordinal);
        foreach (var t in m.Tensors.Where(t => t.Name.EndsWith(weightSuffix, StringComparison.Ordinal)))
        {
            string name = t.Name[..^weightSuffix.Length];
            if (!packed && t.DType != TensorDType.I8) continue; // int-quantized: the dense (ignored) Linears keep float weights
            CheckpointFormatException Bad(string tensor, string why) => new(m.PathOf(m.Get(t.Name).FileName), tensor, why);
            if (t.DType != (packed ? TensorDType.I32 : TensorDType.I8) || t.Shape.Length != 2)
                throw Bad(t.Name, $"a quantized weight is {(packed ? "int32" : "int8")} and 2-D, found {t.DType} [{string.Join(", ", t.Shape)}]");
            if (!m.TryGet(name + ".weight_scale", out var scale))
                throw Bad(name + ".weight_scale", "the quantized module has no weight_scale");
            if (scale.DType is not (TensorDType.BF16 or TensorDType.F16 or TensorDType.F32) || scale.Shape.Length != 2)
                throw Bad(scale.Name, $"a weight scale is a 2-D float tensor, found {scale.DType} [{string.Join(", ", scale.Shape)}]");
            long rows = t.Shape[0], cols = t.Shape[1];
            if (packed)
            {
                if (!m.TryGet(name + ".weight_shape", out var shapeEntry) || shapeEntry.ElementCount != 2 || shapeEntry.DType is not (TensorDType.I64 or TensorDType.I32))
                    throw Bad(name + ".weight_shape", "a pack-quantized module needs weight_shape, two integers (out, in)");
                var raw = CheckpointReader.ReadTensor(m, shapeEntry);
                (rows, cols) = shapeEntry.DType == TensorDType.I64
                    ? (BitConverter.ToInt64(raw, 0), BitConverter.ToInt64(raw, 8)) : (BitConverter.ToInt32(raw, 0), BitConverter.ToInt32(raw, 4));
                if (t.Shape[0] != rows || t.Shape[1] != PackedInt.Words(cols, scheme.Bits))
                    throw Bad(t.Name, $"[{rows}, {cols}] of {scheme.Bits} bits packs into [{rows}, {PackedInt.Words(cols, scheme.Bits)}] words, found [{t.Shape[0]}, {t.Shape[1]}]");
            }
            long groups = scheme.GroupSize is { } size ? (cols + size - 1) / size : 1;
            if (scale.Shape[0] != rows || scale.Shape[1] != groups)
                throw Bad(scale.Name, $"the scale of a [{rows}, {cols}] weight is [{rows}, {groups}], found [{string.Join(", ", scale.Shape)}]");
            TensorEntry? zero = null;
            if (!scheme.Symmetric)
            {
                if (!m.TryGet(name + ".weight_zero_point", out zero))
                    throw Bad(name + ".weight_zero_point", "an asymmetric scheme needs weight_zero_point");
                long[] expected = packed ? [PackedInt.Words(rows, scheme.Bits), groups] : [rows, groups];
                if (zero.DType != (packed ? TensorDType.I32 : TensorDType.I8) || !zero.Shape.SequenceEqual(expected))
                    throw Bad(zero.Name, $"expected {(packed ? "int32" : "int8")} [{string.Join(", ", expected)}], found {zero.DType} [{string.Join(", ", zero.Shape)}]");
            }
            TensorEntry? groupIndex = m.TryGet(name + ".weight_g_idx", out var gi) ? gi : null;
            if (groupIndex is not null && (groupIndex.DType != TensorDType.I32 || groupIndex.ElementCount != cols))
                throw Bad(groupIndex.Name, $"a group index is int32 [{cols}], found {groupIndex.DType} [{string.Join(", ", groupIndex.Shape)}]");
            result[t.Name] = new Module(name, t, scale, zero, groupIndex, checked((int)rows), checked((int)cols));
        }
        if (result.Count == 0)
            throw new CheckpointFormatException(m.Root, null, $"config.json declares {scheme.Format}, but no tensor is a quantized weight ('*{weightSuffix}')");
        return result;
    }

    /// <summary>One module's dense weight, row by row, in its scale's dtype.</summary>
    private static byte[] Dense(CheckpointManifest m, Module module, Scheme scheme)
    {
        int rows = module.Rows, cols = module.Columns, bits = scheme.Bits, per = 32 / bits;
        int groups = (int)module.Scale.Shape[1];
        var scales = Floats(CheckpointReader.ReadTensor(m, module.Scale), module.Scale.DType);
        var zeros = new sbyte[(long)rows * groups];
        if (module.ZeroPoint is { } z)
        {
            var raw = CheckpointReader.ReadTensor(m, z);
            if (scheme.Format == IntQuantized) MemoryMarshal.Cast<byte, sbyte>(raw).CopyTo(zeros);
            else PackedInt.UnpackColumns(MemoryMarshal.Cast<byte, int>(raw), rows, groups, bits, zeros);
        }
        int[]? groupIndex = module.GroupIndex is { } gi ? MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(m, gi)).ToArray() : null;
        if (groupIndex is not null && groupIndex.Any(g => (uint)g >= (uint)groups))
            throw new CheckpointFormatException(m.PathOf(module.GroupIndex!.FileName), module.GroupIndex.Name, $"a group index lies outside 0…{groups - 1}");
        var columnGroup = groupIndex ?? Enumerable.Range(0, cols).Select(c => scheme.GroupSize is { } size ? c / size : 0).ToArray();

        var weight = CheckpointReader.ReadTensor(m, module.Weight);
        var q = new sbyte[cols];
        var row = new float[cols];
        var dense = new byte[(long)rows * cols * module.Scale.DType.ElementSize()];
        int rowBytes = cols * module.Scale.DType.ElementSize();
        for (int r = 0; r < rows; r++)
        {
            if (scheme.Format == IntQuantized) MemoryMarshal.Cast<byte, sbyte>(weight.AsSpan(r * cols, cols)).CopyTo(q);
            else PackedInt.UnpackRow(MemoryMarshal.Cast<byte, int>(weight.AsSpan(r * (int)module.Weight.Shape[1] * 4, (int)module.Weight.Shape[1] * 4)), bits, q);
            for (int c = 0; c < cols; c++)
            {
                int g = r * groups + columnGroup[c];
                row[c] = (q[c] - zeros[g]) * scales[g];
            }
            FloatBits.Store(row, module.Scale.DType, dense.AsSpan(checked(r * rowBytes), rowBytes));
        }
        return dense;
    }

    private static float[] Floats(byte[] raw, TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => MemoryMarshal.Cast<byte, float>(raw).ToArray(),
        TensorDType.BF16 => MemoryMarshal.Cast<byte, ushort>(raw).ToArray().Select(FloatBits.BFloat16ToSingle).ToArray(),
        _ => MemoryMarshal.Cast<byte, ushort>(raw).ToArray().Select(FloatBits.HalfToSingle).ToArray(),
    };

    private static void WriteIndex(string path, IReadOnlyDictionary<string, string> files, string folder)
    {
        long total = files.Values.Distinct().Sum(f => CheckpointReader.ReadManifest(Path.Combine(folder, f)).Tensors.Sum(t => t.ByteLength));
        var map = new JsonObject();
        foreach (var (name, file) in files.OrderBy(p => p.Key, StringComparer.Ordinal)) map[name] = file;
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
        File.WriteAllText(path, index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
