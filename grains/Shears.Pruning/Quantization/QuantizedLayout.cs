using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// The layout of a safetensors checkpoint written in compressed-tensors' <c>pack-quantized</c> format: every file of
/// the input with the same name, each quantized Linear's <c>&lt;m&gt;.weight</c> replaced in place by
/// <c>weight_packed</c> (int32 [out, ceil(in / (32/bits))]), <c>weight_scale</c> (the weight's dtype, [out, groups]),
/// <c>weight_zero_point</c> (asymmetric only: int32 [ceil(out / (32/bits)), groups], packed along dimension 0) and
/// <c>weight_shape</c> (int64 [2]), and with activation-ordered groups <c>weight_g_idx</c> (int32 [in]); every other tensor unchanged; offsets follow from the shapes alone, so the
/// coordinator and every shard compute the same layout from the manifest.
/// </summary>
public sealed class QuantizedLayout
{
    public const string PackedSuffix = ".weight_packed", ScaleSuffix = ".weight_scale", ZeroPointSuffix = ".weight_zero_point", ShapeSuffix = ".weight_shape",
        GroupIndexSuffix = ".weight_g_idx";
    private const string WeightSuffix = ".weight";

    /// <summary>Rows of one zero-point word: row blocks of a tensor start at multiples of this, so no word is shared.</summary>
    public const int RowAlignment = 8;

    private readonly Dictionary<string, TensorEntry> _byName;

    public QuantScheme Scheme { get; }
    public CheckpointManifest Input { get; }
    public IReadOnlySet<string> Quantized { get; }

    /// <summary>Whether each grouped weight carries its columns' groups (<c>weight_g_idx</c>: GPTQ's activation order).</summary>
    public bool GroupIndex { get; }

    /// <summary>Per output file: its name, header length, length and tensors in data order.</summary>
    public IReadOnlyList<(string FileName, long HeaderBytes, long FileLength, IReadOnlyList<TensorEntry> Tensors)> Files { get; }

    private QuantizedLayout(QuantScheme scheme, CheckpointManifest input, IReadOnlySet<string> quantized, bool groupIndex,
        IReadOnlyList<(string, long, long, IReadOnlyList<TensorEntry>)> files)
    {
        (Scheme, Input, Quantized, GroupIndex, Files) = (scheme, input, quantized, groupIndex, files);
        _byName = files.SelectMany(f => f.Item4).ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>
    /// The layout of <paramref name="input"/> with <paramref name="quantized"/> (2-D <c>*.weight</c> tensors) quantized by
    /// <paramref name="scheme"/>; <paramref name="actOrder"/>: GPTQ visited the columns in activation order, so a grouped
    /// scheme stores each column's group (a per-channel one needs nothing: its one scale per row covers any order).
    /// </summary>
    public static QuantizedLayout Plan(CheckpointManifest input, IEnumerable<string> quantized, QuantScheme scheme, bool actOrder = false)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(scheme);
        if (input.Format != CheckpointFormat.Safetensors) throw new ArgumentException($"{input.Root} is {input.Format}; the pack-quantized layout is for safetensors checkpoints");
        var set = quantized.ToHashSet(StringComparer.Ordinal);
        foreach (string name in set)
        {
            var t = input.Get(name);
            if (t.Shape.Length != 2 || !name.EndsWith(WeightSuffix, StringComparison.Ordinal) || !t.DType.IsPrunable())
                throw new ArgumentException($"tensor '{name}' ({t.DType} [{string.Join(", ", t.Shape)}]) is not a Linear weight: only 2-D F32/F16/BF16 '*.weight' tensors are quantized");
        }
        bool groupIndex = actOrder && !scheme.PerChannel;
        var files = SafetensorsLayout.Plan(input, t => set.Contains(t.Name) ? Replacements(t, scheme, groupIndex) : [(t.Name, t.DType, t.Shape)]);
        return new QuantizedLayout(scheme, input, set, groupIndex, files);
    }

    private static IEnumerable<(string, TensorDType, long[])> Replacements(TensorEntry weight, QuantScheme scheme, bool groupIndex)
    {
        string module = Module(weight.Name);
        long rows = weight.Shape[0], columns = weight.Shape[1], groups = scheme.GroupsPerRow(columns);
        yield return (module + PackedSuffix, TensorDType.I32, [rows, PackedInt.Words(columns, scheme.Bits)]);
        yield return (module + ScaleSuffix, weight.DType, [rows, groups]);
        if (!scheme.Symmetric) yield return (module + ZeroPointSuffix, TensorDType.I32, [PackedInt.Words(rows, scheme.Bits), groups]);
        yield return (module + ShapeSuffix, TensorDType.I64, [2]);
        if (groupIndex) yield return (module + GroupIndexSuffix, TensorDType.I32, [columns]);
    }

    /// <summary>The module of a Linear weight: <c>a.b.weight</c> → <c>a.b</c>.</summary>
    public static string Module(string weightName) =>
        weightName.EndsWith(WeightSuffix, StringComparison.Ordinal) ? weightName[..^WeightSuffix.Length] : weightName;

    /// <summary>The output entry of a tensor of the output (a kept tensor's own name, or a quantized one's parts).</summary>
    public TensorEntry Output(string name) =>
        _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"tensor '{name}' is not in the quantized layout");

    public long TotalTensorBytes => Files.Sum(f => f.Tensors.Sum(t => t.ByteLength));

    /// <summary>
    /// Creates the output in <paramref name="outDir"/>: every file with its header and full length (the shards fill the
    /// data), each <c>weight_shape</c> written, the index rewritten for the new names, the companion files copied and
    /// <c>config.json</c> given its <c>quantization_config</c>. <paramref name="ignore"/>: the Linear modules left
    /// unquantized, which the config lists so that loaders keep them dense.
    /// </summary>
    public void Create(string outDir, IEnumerable<string> ignore)
    {
        var root = Path.GetFullPath(outDir);
        Directory.CreateDirectory(root);
        foreach (var file in Files)
        {
            var tensors = file.Tensors;
            using var target = SafetensorsLayout.Create(Input, root, file);
            foreach (var t in tensors.Where(t => t.Name.EndsWith(ShapeSuffix, StringComparison.Ordinal)))
            {
                var weight = Input.Get(t.Name[..^ShapeSuffix.Length] + WeightSuffix);
                var bytes = new byte[16];
                BitConverter.TryWriteBytes(bytes.AsSpan(0, 8), weight.Shape[0]);
                BitConverter.TryWriteBytes(bytes.AsSpan(8, 8), weight.Shape[1]);
                RandomAccess.Write(target, bytes, t.FileOffset);
            }
        }
        if (Input.IndexFileName is { } index) File.WriteAllText(Path.Combine(root, index), RewriteIndex(File.ReadAllText(Input.PathOf(index))));
        foreach (var companion in Input.CompanionFiles)
        {
            var target = Path.Combine(root, companion);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (string.Equals(Path.GetFileName(companion), "config.json", StringComparison.Ordinal) && Path.GetDirectoryName(companion) is null or "")
                File.WriteAllText(target, CompressedTensorsConfig.AddTo(File.ReadAllText(Input.PathOf(companion)), Scheme, ignore, Input.PathOf(companion), GroupIndex ? "group" : null));
            else
                File.Copy(Input.PathOf(companion), target, overwrite: true);
        }
    }

    /// <summary>The Hugging Face index with each quantized weight's entry replaced by its parts' and <c>total_size</c> updated.</summary>
    public string RewriteIndex(string indexJson)
    {
        var root = JsonNode.Parse(indexJson)?.AsObject() ?? throw new CheckpointFormatException(Input.Root, null, "the index is not a JSON object");
        var map = root["weight_map"]?.AsObject() ?? throw new CheckpointFormatException(Input.Root, null, "the index has no weight_map");
        var rebuilt = new JsonObject();
        foreach (var (name, file) in map.ToArray())
        {
            if (!Quantized.Contains(name)) { rebuilt[name] = file?.DeepClone(); continue; }
            string module = Module(name);
            foreach (var suffix in new[] { PackedSuffix, ScaleSuffix, ZeroPointSuffix, ShapeSuffix, GroupIndexSuffix })
                if (_byName.ContainsKey(module + suffix)) rebuilt[module + suffix] = file?.DeepClone();
        }
        root["weight_map"] = rebuilt;
        if (root["metadata"] is JsonObject metadata) metadata["total_size"] = TotalTensorBytes;
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
