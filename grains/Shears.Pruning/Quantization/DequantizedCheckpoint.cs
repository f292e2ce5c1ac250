using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// A compressed-tensors checkpoint (<c>pack-quantized</c> or <c>int-quantized</c>) seen as the dense checkpoint it
/// decompresses to: every file of the input with the same name, each quantized module's parts replaced by
/// <c>&lt;m&gt;.weight</c> [out, in] in its scale's dtype, w = (q − zp) · scale with column j in group g_idx[j] where
/// <c>weight_g_idx</c> is stored, else j / group size; every other tensor unchanged; <c>config.json</c> without its
/// <c>quantization_config</c>. Weights of any activation scheme are read (activation quantization does not change
/// them); the activations' own tensors (<c>input_scale</c>, <c>input_zero_point</c>) are dropped.
/// </summary>
public sealed class DequantizedCheckpoint
{
    public const string PackQuantized = "pack-quantized", IntQuantized = "int-quantized";
    private const string WeightSuffix = ".weight";
    private static readonly string[] ActivationSuffixes = [".input_scale", ".input_zero_point"];

    /// <summary>One quantized Linear: its integer weights, scales, optional zero points and group index.</summary>
    public sealed record Module(string Name, TensorEntry Values, TensorEntry Scale, TensorEntry? ZeroPoint, TensorEntry? GroupIndex, long Rows, long Columns);

    private readonly Dictionary<string, TensorEntry> _dense;

    public CheckpointManifest Input { get; }
    /// <summary><see cref="PackQuantized"/> or <see cref="IntQuantized"/>.</summary>
    public string Format { get; }
    public QuantScheme Scheme { get; }
    public IReadOnlyList<Module> Modules { get; }

    /// <summary>Per output file: its name, length and tensors in data order.</summary>
    public IReadOnlyList<(string FileName, long FileLength, IReadOnlyList<TensorEntry> Tensors)> Files { get; }

    private DequantizedCheckpoint(CheckpointManifest input, string format, QuantScheme scheme, IReadOnlyList<Module> modules,
        IReadOnlyList<(string, long, IReadOnlyList<TensorEntry>)> files)
    {
        (Input, Format, Scheme, Modules, Files) = (input, format, scheme, modules, files);
        _dense = files.SelectMany(f => f.Item3).ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The dense entry of a tensor of the output.</summary>
    public TensorEntry Output(string name) =>
        _dense.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"tensor '{name}' is not in the dequantized layout");

    /// <summary>
    /// Reads and checks the quantization of <paramref name="input"/> from its <c>config.json</c> and tensor headers (and
    /// the small <c>weight_shape</c> and <c>weight_g_idx</c> tensors). Throws <see cref="CheckpointFormatException"/>
    /// naming the file, the field or the tensor at fault for anything it does not read.
    /// </summary>
    public static DequantizedCheckpoint Read(CheckpointManifest input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Format != CheckpointFormat.Safetensors)
            throw new CheckpointFormatException(input.Root, null, $"is {input.Format}; quantized checkpoints are read in compressed-tensors' safetensors layouts only");
        string configPath = input.PathOf("config.json");
        var (format, scheme) = ReadConfig(configPath);
        var modules = format == PackQuantized ? PackedModules(input, scheme) : IntModules(input, scheme);
        if (modules.Count == 0)
            throw new CheckpointFormatException(input.Root, null, $"config.json says {format} but no tensor is quantized (no '*{(format == PackQuantized ? QuantizedLayout.PackedSuffix : ".weight")}' with a '*{QuantizedLayout.ScaleSuffix}')");
        return new DequantizedCheckpoint(input, format, scheme, modules, Layout(input, modules));
    }

    private static (string Format, QuantScheme Scheme) ReadConfig(string path)
    {
        if (!File.Exists(path)) throw new CheckpointFormatException(path, null, "does not exist: a quantized checkpoint's config.json says how to dequantize it");
        JsonObject config;
        try { config = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new JsonException("not an object"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new CheckpointFormatException(path, null, $"is not a JSON object: {e.Message}"); }
        if (config["quantization_config"] is not JsonObject q)
            throw new CheckpointFormatException(path, null, "has no quantization_config object, yet the tensors are quantized");
        string? Text(JsonNode? node, string field)
        {
            if (node is null) return null;
            try { return node.GetValue<string>(); }
            catch (InvalidOperationException) { throw new CheckpointFormatException(path, null, $"{field} must be a string, got {node.ToJsonString()}"); }
        }
        if (Text(q["quant_method"], "quantization_config.quant_method") is not CompressedTensorsConfig.QuantMethod)
            throw new CheckpointFormatException(path, null, $"quantization_config.quant_method is '{q["quant_method"]}'; only '{CompressedTensorsConfig.QuantMethod}' is read");
        string? format = Text(q["format"], "quantization_config.format");
        if (format is not (PackQuantized or IntQuantized))
            throw new CheckpointFormatException(path, null, $"quantization_config.format is '{format}'; only '{PackQuantized}' and '{IntQuantized}' are read");
        if (Text(q["quantization_status"], "quantization_config.quantization_status") is { } status && status != "compressed")
            throw new CheckpointFormatException(path, null, $"quantization_config.quantization_status is '{status}'; only 'compressed' checkpoints are read");
        if (q["kv_cache_scheme"] is not null)
            throw new CheckpointFormatException(path, null, "quantization_config.kv_cache_scheme is set; a quantized KV cache is not read");
        if (q["sparsity_config"] is JsonObject sparsity && Text(sparsity["format"], "quantization_config.sparsity_config.format") is { } sparse && sparse != "dense")
            throw new CheckpointFormatException(path, null, $"quantization_config.sparsity_config.format is '{sparse}'; sparse layouts are not read");
        if (q["config_groups"] is not JsonObject groups || groups.Count == 0)
            throw new CheckpointFormatException(path, null, "quantization_config.config_groups is missing or empty");
        QuantScheme? scheme = null;
        string? first = null;
        foreach (var (name, node) in groups)
        {
            string field = $"quantization_config.config_groups.{name}";
            if (node is not JsonObject group) throw new CheckpointFormatException(path, null, $"{field} is not an object");
            if (Text(group["format"], field + ".format") is { } own && own != format)
                throw new CheckpointFormatException(path, null, $"{field}.format is '{own}', the checkpoint's is '{format}'; mixed formats are not read");
            if (group["output_activations"] is not null)
                throw new CheckpointFormatException(path, null, $"{field}.output_activations is set; quantized outputs are not read");
            if (group["weights"] is not JsonObject weights)
                throw new CheckpointFormatException(path, null, $"{field}.weights is missing: only weight quantization is dequantized");
            var parsed = ReadWeights(weights, path, field + ".weights", Text);
            if (scheme is null) (scheme, first) = (parsed, name);
            else if (scheme != parsed)
                throw new CheckpointFormatException(path, null, $"{field}.weights differ from config_groups.{first}'s; one weight scheme per checkpoint is read");
        }
        return (format, scheme!);
    }

    private static QuantScheme ReadWeights(JsonObject w, string path, string field, Func<JsonNode?, string, string?> text)
    {
        if (text(w["type"], field + ".type") is not "int")
            throw new CheckpointFormatException(path, null, $"{field}.type is '{w["type"]}'; only integer weights ('int') are read");
        int? Number(string key)
        {
            try { return w[key]?.GetValue<int>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new CheckpointFormatException(path, null, $"{field}.{key} must be an integer, got {w[key]?.ToJsonString()}"); }
        }
        int bits = Number("num_bits") ?? throw new CheckpointFormatException(path, null, $"{field}.num_bits is missing");
        if (bits is not (4 or 8)) throw new CheckpointFormatException(path, null, $"{field}.num_bits is {bits}; 4- and 8-bit weights are read");
        bool symmetric;
        try { symmetric = w["symmetric"]?.GetValue<bool>() ?? true; }
        catch (InvalidOperationException) { throw new CheckpointFormatException(path, null, $"{field}.symmetric must be true or false"); }
        if (w["dynamic"] is JsonValue dynamic && dynamic.TryGetValue(out bool isDynamic) && isDynamic)
            throw new CheckpointFormatException(path, null, $"{field}.dynamic is true; weights must be stored quantized");
        string? strategy = text(w["strategy"], field + ".strategy");
        int groupSize = strategy switch
        {
            "channel" => 0,
            "group" => Number("group_size") is int size && size > 0 ? size : throw new CheckpointFormatException(path, null, $"{field}.group_size must be positive for strategy 'group'"),
            _ => throw new CheckpointFormatException(path, null, $"{field}.strategy is '{strategy}'; 'channel' and 'group' are read"),
        };
        string name = $"W{bits}A16{(symmetric ? "" : "_ASYM")}";
        return new QuantScheme(name, bits, symmetric, groupSize, false);
    }

    private static List<Module> PackedModules(CheckpointManifest m, QuantScheme scheme)
    {
        var modules = new List<Module>();
        foreach (var packed in m.Tensors.Where(t => t.Name.EndsWith(QuantizedLayout.PackedSuffix, StringComparison.Ordinal)))
        {
            string module = packed.Name[..^QuantizedLayout.PackedSuffix.Length];
            Expect(m, packed, TensorDType.I32, null);
            var shape = Required(m, module + QuantizedLayout.ShapeSuffix);
            if (shape.DType is not (TensorDType.I64 or TensorDType.I32) || shape.Shape is not [2])
                throw new CheckpointFormatException(m.PathOf(shape.FileName), shape.Name, $"is {shape.DType} [{string.Join(", ", shape.Shape)}]; expected I64 [2] (out, in)");
            var raw = CheckpointReader.ReadTensor(m, shape);
            long rows = shape.DType == TensorDType.I64 ? BitConverter.ToInt64(raw, 0) : BitConverter.ToInt32(raw, 0);
            long columns = shape.DType == TensorDType.I64 ? BitConverter.ToInt64(raw, 8) : BitConverter.ToInt32(raw, 4);
            if (rows <= 0 || columns <= 0) throw new CheckpointFormatException(m.PathOf(shape.FileName), shape.Name, $"holds ({rows}, {columns}); expected a positive (out, in)");
            Expect(m, packed, TensorDType.I32, [rows, PackedInt.Words(columns, scheme.Bits)]);
            modules.Add(Parts(m, module, packed, rows, columns, scheme, zeroPointRows: PackedInt.Words(rows, scheme.Bits), zeroPointTypes: [TensorDType.I32]));
        }
        foreach (var t in m.Tensors.Where(t => t.Name.EndsWith(WeightSuffix, StringComparison.Ordinal) && t.DType is TensorDType.I8 or TensorDType.U8))
            throw new CheckpointFormatException(m.PathOf(t.FileName), t.Name, $"is {t.DType}, but a {PackQuantized} checkpoint packs its weights into '*{QuantizedLayout.PackedSuffix}'");
        return modules;
    }

    private static List<Module> IntModules(CheckpointManifest m, QuantScheme scheme)
    {
        var modules = new List<Module>();
        foreach (var weight in m.Tensors.Where(t => t.Name.EndsWith(WeightSuffix, StringComparison.Ordinal) && t.DType == TensorDType.I8))
        {
            string module = weight.Name[..^WeightSuffix.Length];
            if (weight.Shape.Length != 2) throw new CheckpointFormatException(m.PathOf(weight.FileName), weight.Name, $"is I8 [{string.Join(", ", weight.Shape)}]; expected a 2-D Linear weight");
            modules.Add(Parts(m, module, weight, weight.Shape[0], weight.Shape[1], scheme, zeroPointRows: weight.Shape[0], zeroPointTypes: [TensorDType.I8, TensorDType.I32]));
        }
        foreach (var t in m.Tensors.Where(t => t.Name.EndsWith(QuantizedLayout.PackedSuffix, StringComparison.Ordinal)))
            throw new CheckpointFormatException(m.PathOf(t.FileName), t.Name, $"is packed, but config.json says {IntQuantized} (int8 '*.weight')");
        return modules;
    }

    /// <summary>A module's scale, zero point and group index, checked against its [rows, columns] and the scheme.</summary>
    private static Module Parts(CheckpointManifest m, string module, TensorEntry values, long rows, long columns, QuantScheme scheme, long zeroPointRows, TensorDType[] zeroPointTypes)
    {
        if (m.TryGet(module + WeightSuffix, out var dense) && dense != values)
            throw new CheckpointFormatException(m.PathOf(dense.FileName), dense.Name, $"is stored beside '{values.Name}'; a quantized module holds one of them");
        long groups = scheme.GroupsPerRow(columns);
        var scale = Required(m, module + QuantizedLayout.ScaleSuffix);
        if (!scale.DType.IsPrunable()) throw new CheckpointFormatException(m.PathOf(scale.FileName), scale.Name, $"is {scale.DType}; scales are F32, F16 or BF16");
        Expect(m, scale, scale.DType, [rows, groups]);
        TensorEntry? zeroPoint = null;
        if (m.TryGet(module + QuantizedLayout.ZeroPointSuffix, out var zp))
        {
            if (!zeroPointTypes.Contains(zp.DType))
                throw new CheckpointFormatException(m.PathOf(zp.FileName), zp.Name, $"is {zp.DType}; expected {string.Join(" or ", zeroPointTypes)}");
            Expect(m, zp, zp.DType, [zeroPointRows, groups]);
            zeroPoint = zp;
        }
        else if (!scheme.Symmetric)
            throw new CheckpointFormatException(m.PathOf(values.FileName), module + QuantizedLayout.ZeroPointSuffix, "is missing: asymmetric weights need their zero points");
        TensorEntry? groupIndex = null;
        if (m.TryGet(module + QuantizedLayout.GroupIndexSuffix, out var gi))
        {
            Expect(m, gi, TensorDType.I32, [columns]);
            if (!scheme.PerChannel)
            {
                var index = MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(m, gi));
                for (int c = 0; c < index.Length; c++)
                    if ((uint)index[c] >= (ulong)groups)
                        throw new CheckpointFormatException(m.PathOf(gi.FileName), gi.Name, $"g_idx[{c}] = {index[c]} is not one of the {groups} groups");
                groupIndex = gi;
            }
        }
        return new Module(module, values, scale, zeroPoint, groupIndex, rows, columns);
    }

    private static TensorEntry Required(CheckpointManifest m, string name) =>
        m.TryGet(name, out var t) ? t : throw new CheckpointFormatException(m.Root, name, "is missing: every quantized module needs it");

    private static void Expect(CheckpointManifest m, TensorEntry t, TensorDType dtype, long[]? shape)
    {
        if (t.DType != dtype || (shape is not null && !t.Shape.SequenceEqual(shape)) || (shape is null && t.Shape.Length != 2))
            throw new CheckpointFormatException(m.PathOf(t.FileName), t.Name,
                $"is {t.DType} [{string.Join(", ", t.Shape)}]; expected {dtype} {(shape is null ? "2-D" : $"[{string.Join(", ", shape)}]")}");
    }

    private static List<(string, long, IReadOnlyList<TensorEntry>)> Layout(CheckpointManifest input, IReadOnlyList<Module> modules)
    {
        var byValues = modules.ToDictionary(mo => mo.Values.Name, StringComparer.Ordinal);
        var dropped = new HashSet<string>(StringComparer.Ordinal);
        foreach (var mo in modules)
        {
            foreach (var suffix in new[] { QuantizedLayout.ScaleSuffix, QuantizedLayout.ZeroPointSuffix, QuantizedLayout.ShapeSuffix, QuantizedLayout.GroupIndexSuffix }.Concat(ActivationSuffixes))
                dropped.Add(mo.Name + suffix);
            if (mo.Values.Name != mo.Name + WeightSuffix) dropped.Add(mo.Values.Name);
        }
        var files = new List<(string, long, IReadOnlyList<TensorEntry>)>();
        foreach (var file in input.Files)
        {
            var declared = new List<(string Name, TensorDType DType, long[] Shape)>();
            foreach (var t in input.Tensors.Where(t => t.FileName == file.FileName).OrderBy(t => t.FileOffset).ThenBy(t => t.Name, StringComparer.Ordinal))
            {
                if (byValues.TryGetValue(t.Name, out var mo)) declared.Add((mo.Name + WeightSuffix, mo.Scale.DType, [mo.Rows, mo.Columns]));
                else if (!dropped.Contains(t.Name)) declared.Add((t.Name, t.DType, t.Shape));
            }
            var lengths = declared.Select(d => checked(TensorEntry.CountElements(d.Shape) * d.DType.ElementSize())).ToArray();
            long offset = SafetensorsWriter.BuildHeader(declared, lengths, file.Metadata).Length;
            var entries = new List<TensorEntry>();
            for (int i = 0; i < declared.Count; i++)
            {
                entries.Add(new TensorEntry(declared[i].Name, declared[i].DType, declared[i].Shape, file.FileName, offset, lengths[i]));
                offset += lengths[i];
            }
            files.Add((file.FileName, offset, entries));
        }
        return files;
    }

    /// <summary>Writes the dense checkpoint into <paramref name="outDir"/>: <see cref="CreateLayout"/>, then <see cref="Fill"/>.</summary>
    public void Write(string outDir, CancellationToken cancellationToken = default)
    {
        CreateLayout(outDir);
        Fill(outDir, cancellationToken);
    }

    /// <summary>
    /// Creates the dense checkpoint's files in <paramref name="outDir"/> with their headers and full lengths (data to be
    /// filled), the index for the dense names, the companion files, and <c>config.json</c> without its
    /// <c>quantization_config</c>: reads nothing but small files, so a manifest can be read from it at once.
    /// </summary>
    public void CreateLayout(string outDir)
    {
        var root = Path.GetFullPath(outDir);
        Directory.CreateDirectory(root);
        foreach (var (fileName, fileLength, tensors) in Files)
        {
            var header = SafetensorsWriter.BuildHeader(tensors.Select(t => (t.Name, t.DType, t.Shape)).ToArray(), tensors.Select(t => t.ByteLength).ToArray(), Input.GetFile(fileName).Metadata);
            var path = Path.Combine(root, fileName);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var target = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
            RandomAccess.SetLength(target, fileLength);
            RandomAccess.Write(target, header, 0);
        }
        if (Input.IndexFileName is { } index) File.WriteAllText(Path.Combine(root, index), RewriteIndex(File.ReadAllText(Input.PathOf(index))));
        foreach (var companion in Input.CompanionFiles)
        {
            var target = Path.Combine(root, companion);
            if (companion == "config.json")
            {
                var config = JsonNode.Parse(File.ReadAllText(Input.PathOf(companion)))!.AsObject();
                config.Remove("quantization_config");
                File.WriteAllText(target, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else File.Copy(Input.PathOf(companion), target, overwrite: true);
        }
    }

    /// <summary>Fills the files <see cref="CreateLayout"/> made: each kept tensor copied, each quantized one dequantized by blocks of rows.</summary>
    public void Fill(string outDir, CancellationToken cancellationToken = default)
    {
        var root = Path.GetFullPath(outDir);
        var byValues = Modules.ToDictionary(mo => mo.Values.Name, StringComparer.Ordinal);
        foreach (var t in Input.Tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (byValues.TryGetValue(t.Name, out var module)) Dequantize(module, root);
            else if (_dense.TryGetValue(t.Name, out var kept)) CheckpointOutput.CopyTensor(Input, t, root, kept);
        }
    }

    private string RewriteIndex(string indexJson)
    {
        var root = JsonNode.Parse(indexJson)?.AsObject() ?? throw new CheckpointFormatException(Input.Root, null, "the index is not a JSON object");
        var map = root["weight_map"]?.AsObject() ?? throw new CheckpointFormatException(Input.Root, null, "the index has no weight_map");
        var rebuilt = new JsonObject();
        foreach (var file in Files)
            foreach (var t in file.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
                rebuilt[t.Name] = file.FileName;
        root["weight_map"] = rebuilt;
        if (root["metadata"] is JsonObject metadata) metadata["total_size"] = Files.Sum(f => f.Tensors.Sum(t => t.ByteLength));
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The rows a block dequantizes at once: about 16 MB of output.</summary>
    private const long BlockBytes = 16L << 20;

    private void Dequantize(Module mo, string root)
    {
        var dtype = mo.Scale.DType;
        int columns = checked((int)mo.Columns), groups = checked((int)Scheme.GroupsPerRow(mo.Columns));
        var scales = QuantizedRows.Widen(CheckpointReader.ReadTensor(Input, mo.Scale), dtype, mo.Rows * groups, mo.Scale.Name);
        var zeroPoints = ZeroPoints(mo, groups);
        int[]? groupIndex = mo.GroupIndex is { } gi ? MemoryMarshal.Cast<byte, int>(CheckpointReader.ReadTensor(Input, gi)).ToArray() : null;
        long width = Scheme.GroupWidth(mo.Columns);
        var groupOf = Enumerable.Range(0, columns).Select(c => groupIndex?[c] ?? (int)(c / width)).ToArray();
        var output = Output(mo.Name + WeightSuffix);
        long rowBytes = (long)columns * dtype.ElementSize();
        int block = (int)Math.Clamp(BlockBytes / rowBytes, 1, mo.Rows);
        long valueRowBytes = mo.Values.Shape[1] * mo.Values.DType.ElementSize();
        var q = new sbyte[columns];
        for (long start = 0; start < mo.Rows; start += block)
        {
            int count = (int)Math.Min(block, mo.Rows - start);
            var stored = new byte[count * valueRowBytes];
            CheckpointReader.ReadTensorRange(Input, mo.Values, start * valueRowBytes, stored);
            var values = new float[(long)count * columns];
            for (int r = 0; r < count; r++)
            {
                var row = stored.AsSpan((int)(r * valueRowBytes), (int)valueRowBytes);
                if (Format == PackQuantized) PackedInt.UnpackRow(MemoryMarshal.Cast<byte, int>(row), Scheme.Bits, q);
                else MemoryMarshal.Cast<byte, sbyte>(row).CopyTo(q);
                long at = (start + r) * groups;
                for (int c = 0; c < columns; c++)
                {
                    long g = at + groupOf[c];
                    values[r * columns + c] = GroupQuantizer.Dequantize(q[c], new QuantParams(scales[g], zeroPoints?[g] ?? 0), dtype);
                }
            }
            var raw = new byte[values.Length * dtype.ElementSize()];
            FloatBits.Store(values, dtype, raw);
            CheckpointOutput.WriteTensorRange(root, output, start * rowBytes, raw);
        }
    }

    /// <summary>The zero points as [rows, groups] integers, unpacked along rows (pack-quantized) or as stored.</summary>
    private int[]? ZeroPoints(Module mo, int groups)
    {
        if (mo.ZeroPoint is not { } zp) return null;
        var raw = CheckpointReader.ReadTensor(Input, zp);
        if (Format == PackQuantized)
        {
            var values = new sbyte[mo.Rows * groups];
            PackedInt.UnpackColumns(MemoryMarshal.Cast<byte, int>(raw), checked((int)mo.Rows), groups, Scheme.Bits, values);
            return values.Select(v => (int)v).ToArray();
        }
        return zp.DType == TensorDType.I8 ? MemoryMarshal.Cast<byte, sbyte>(raw).ToArray().Select(v => (int)v).ToArray() : MemoryMarshal.Cast<byte, int>(raw).ToArray();
    }
}
