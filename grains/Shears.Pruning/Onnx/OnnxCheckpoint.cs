using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>An ONNX model seen as a checkpoint: its raw-data initializers as tensors, its MatMul/Gemm weights as the default prunable set.</summary>
public static class OnnxCheckpoint
{
    public static CheckpointManifest ReadManifest(string path)
    {
        var model = OnnxModel.Read(path);
        string root = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string file = Path.GetFileName(path);
        var tensors = new List<TensorEntry>();
        foreach (var init in model.Initializers)
        {
            if (init.ToTensorEntry(file) is { } entry) tensors.Add(entry);
        }
        var prunable = model.FindPrunable();
        var companions = Directory.EnumerateFiles(root)
            .Select(f => Path.GetFileName(f)!)
            .Where(f => f != file && !f.StartsWith('.') && (f.EndsWith(".txt") || f.EndsWith(".json") || f.EndsWith(".model")) && f != "shears-report.json")
            .Order(StringComparer.Ordinal).ToArray();
        return new CheckpointManifest(root, null, [new CheckpointFile(file, 0, model.FileLength, null)], tensors, companions)
        {
            Format = CheckpointFormat.Onnx,
            DefaultPrunable = prunable.Select(p => p.Initializer.Name).ToHashSet(StringComparer.Ordinal),
            OutputColumns = prunable.Where(p => p.OutputIsColumn).Select(p => p.Initializer.Name).ToHashSet(StringComparer.Ordinal),
            LayerRoles = prunable.Where(p => p.Layer is not null && p.Role is not null).GroupBy(p => p.Initializer.Name, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => (g.First().Layer!.Value, g.First().Role!), StringComparer.Ordinal),
        };
    }
}
