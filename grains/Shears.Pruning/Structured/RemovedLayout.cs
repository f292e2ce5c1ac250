using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Structured;

/// <summary>
/// A safetensors checkpoint with structured units removed: every file of the input with the same name, each cut tensor
/// with its smaller shape, every other tensor unchanged; offsets follow from the cuts alone, so the coordinator (which
/// creates the files, the index and the config) and every shard (which fills its tensors) compute the same layout.
/// </summary>
public sealed class RemovedLayout
{
    private readonly Dictionary<string, TensorEntry> _byName;

    public CheckpointManifest Input { get; }
    public IReadOnlyDictionary<string, TensorCut> Cuts { get; }
    public IReadOnlyList<(string FileName, long HeaderBytes, long FileLength, IReadOnlyList<TensorEntry> Tensors)> Files { get; }

    private RemovedLayout(CheckpointManifest input, Dictionary<string, TensorCut> cuts, IReadOnlyList<(string, long, long, IReadOnlyList<TensorEntry>)> files)
    {
        (Input, Cuts, Files) = (input, cuts, files);
        _byName = files.SelectMany(f => f.Item4).ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The output name of each input tensor (absent: the tensor is dropped with its layer).</summary>
    private Dictionary<string, string> _names = new(StringComparer.Ordinal);

    /// <summary>
    /// The layout of <paramref name="input"/> with <paramref name="cuts"/> applied and the tensors that
    /// <paramref name="rename"/> maps to null dropped (the others renamed as it says; null: names kept).
    /// </summary>
    public static RemovedLayout Plan(CheckpointManifest input, IEnumerable<TensorCut> cuts, Func<string, string?>? rename = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(cuts);
        if (input.Format != CheckpointFormat.Safetensors) throw new ArgumentException($"{input.Root} is {input.Format}; this layout is for safetensors checkpoints");
        var byTensor = new Dictionary<string, TensorCut>(StringComparer.Ordinal);
        foreach (var cut in cuts)
        {
            if (!input.Contains(cut.Tensor)) throw new ArgumentException($"tensor '{cut.Tensor}' is cut but not in {input.Root}");
            if (!byTensor.TryAdd(cut.Tensor, cut)) throw new ArgumentException($"tensor '{cut.Tensor}' is cut twice");
            _ = cut.Shape(input.Get(cut.Tensor).Shape);
        }
        rename ??= name => name;
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var t in input.Tensors)
            if (rename(t.Name) is { } output) names[t.Name] = output;
        var files = SafetensorsLayout.Plan(input, t => names.TryGetValue(t.Name, out var output)
            ? [(output, t.DType, byTensor.TryGetValue(t.Name, out var cut) ? cut.Shape(t.Shape) : t.Shape)]
            : []);
        return new RemovedLayout(input, byTensor, files) { _names = names };
    }

    /// <summary>An input tensor's place in the output (under its new name), or null when it is dropped.</summary>
    public TensorEntry? Output(string name) =>
        !_names.TryGetValue(name, out var output) ? null
        : _byName.TryGetValue(output, out var t) ? t : throw new KeyNotFoundException($"tensor '{name}' is not in the output layout");

    public long TotalTensorBytes => Files.Sum(f => f.Tensors.Sum(t => t.ByteLength));

    /// <summary>
    /// Creates the output in <paramref name="outDir"/>: every file with its header and full length (the shards fill the
    /// data), the index with its new <c>total_size</c>, the companion files copied and <c>config.json</c> given the
    /// <paramref name="config"/> fields (the smaller model's sizes), and the per-layer fields following
    /// <paramref name="removedLayers"/>.
    /// </summary>
    public void Create(string outDir, IReadOnlyDictionary<string, int> config, IReadOnlyList<int>? removedLayers = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var root = Path.GetFullPath(outDir);
        Directory.CreateDirectory(root);
        foreach (var file in Files)
            using (SafetensorsLayout.Create(Input, root, file)) { }
        if (Input.IndexFileName is { } index)
        {
            var json = JsonNode.Parse(File.ReadAllText(Input.PathOf(index)))?.AsObject() ?? throw new CheckpointFormatException(Input.PathOf(index), null, "the index is not a JSON object");
            if (json["metadata"] is JsonObject metadata) metadata["total_size"] = TotalTensorBytes;
            if (json["weight_map"] is JsonObject map)
            {
                var rebuilt = new JsonObject();
                foreach (var (name, file) in map.ToArray())
                    if (_names.TryGetValue(name, out var output)) rebuilt[output] = file?.DeepClone();
                json["weight_map"] = rebuilt;
            }
            File.WriteAllText(Path.Combine(root, index), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        bool configWritten = false;
        foreach (var companion in Input.CompanionFiles)
        {
            var target = Path.Combine(root, companion);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (string.Equals(companion, "config.json", StringComparison.Ordinal))
            {
                File.WriteAllText(target, EditConfig(File.ReadAllText(Input.PathOf(companion)), config, Input.PathOf(companion), removedLayers));
                configWritten = true;
            }
            else File.Copy(Input.PathOf(companion), target, overwrite: true);
        }
        if (config.Count > 0 && !configWritten)
            throw new InvalidOperationException($"{Input.Root} has no config.json to record the removed model's sizes ({string.Join(", ", config.Keys)})");
    }

    /// <summary>
    /// <paramref name="json"/> (a config.json) with the given integer fields set, the others as they were. Once
    /// <paramref name="removedLayers"/> are gone, the fields that describe layers one by one follow them: layer_types loses
    /// their entries, and max_window_layers (Qwen: the layers below it attend fully) counts only the kept layers below it.
    /// </summary>
    public static string EditConfig(string json, IReadOnlyDictionary<string, int> fields, string path, IReadOnlyList<int>? removedLayers = null)
    {
        JsonObject root;
        try { root = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException("not a JSON object"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or InvalidDataException)
        {
            throw new CheckpointFormatException(path, null, $"config.json is not a JSON object: {e.Message}");
        }
        foreach (var (name, value) in fields) root[name] = value;
        if (removedLayers is { Count: > 0 })
        {
            if (root["layer_types"] is JsonArray types)
                root["layer_types"] = new JsonArray(types.Where((_, i) => !removedLayers.Contains(i)).Select(t => t?.DeepClone()).ToArray());
            if (root["max_window_layers"] is JsonValue value && value.TryGetValue(out int below))
                root["max_window_layers"] = below - removedLayers.Count(l => l < below);
        }
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }
}
