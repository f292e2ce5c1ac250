using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>
/// An ONNX model seen as a checkpoint: its raw-data and external-data initializers as tensors (an external data file is
/// one more file of the checkpoint, which must lie inside the model's folder), its MatMul/Gemm weights as the default
/// prunable set.
/// </summary>
public static class OnnxCheckpoint
{
    /// <summary>The external data file <paramref name="location"/> of <paramref name="tensor"/>: a file inside <paramref name="root"/>, links resolved.</summary>
    private static CheckpointFile ExternalFile(string modelPath, string root, string tensor, string location)
    {
        string Problem(string what) => $"its external data file '{location}' {what}";
        if (location.Contains('\0'))
            throw new CheckpointFormatException(modelPath, tensor, Problem("holds a NUL character"));
        if (Path.IsPathRooted(location) || location.Contains('\\'))
            throw new CheckpointFormatException(modelPath, tensor, Problem("is outside the model's folder (an absolute path); ONNX external data is named relative to the model file"));
        string full = Path.GetFullPath(Path.Combine(root, location));
        string inside = Path.TrimEndingDirectorySeparator(root) + Path.DirectorySeparatorChar;
        if (!full.StartsWith(inside, StringComparison.Ordinal))
            throw new CheckpointFormatException(modelPath, tensor, Problem("is outside the model's folder"));
        // Where the file and the folder really are (every link along either path followed, the folder's parents too): a link
        // to a file beside it is fine however the folder was reached; a link, or a linked subfolder, that leads out is not.
        string target = DataRoots.RealPath(full);
        if (!target.StartsWith(Path.TrimEndingDirectorySeparator(DataRoots.RealPath(root)) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new CheckpointFormatException(modelPath, tensor, Problem($"leads to {target}, outside the model's folder"));
        var info = new FileInfo(target); // the file itself, not a link: its length is the data's
        if (!info.Exists) throw new CheckpointFormatException(modelPath, tensor, Problem($"does not exist ({full})"));
        return new CheckpointFile(Path.GetRelativePath(root, full).Replace(Path.DirectorySeparatorChar, '/'), 0, info.Length, null);
    }

    public static CheckpointManifest ReadManifest(string path)
    {
        var model = OnnxModel.Read(path);
        string root = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string file = Path.GetFileName(path);
        var tensors = new List<TensorEntry>();
        var files = new List<CheckpointFile> { new(file, 0, model.FileLength, null) };
        foreach (var init in model.Initializers)
        {
            if (init.ToTensorEntry(file) is not { } entry) continue;
            if (init.ExternalData is not null)
            {
                var data = ExternalFile(path, root, init.Name, entry.FileName);
                if (files.FirstOrDefault(f => f.FileName == data.FileName) is { } known) data = known;
                else files.Add(data);
                entry = entry with { FileName = data.FileName };
                if (entry.FileOffset < 0 || entry.FileOffset + entry.ByteLength > data.FileLength)
                    throw new CheckpointFormatException(path, init.Name,
                        $"its external data [{entry.FileOffset}, {entry.FileOffset + entry.ByteLength}) lies past the end of '{entry.FileName}' ({data.FileLength} bytes)");
            }
            tensors.Add(entry);
        }
        var prunable = model.FindPrunable();
        var companions = Directory.EnumerateFiles(root)
            .Select(f => Path.GetFileName(f)!)
            .Where(f => f != file && files.All(d => d.FileName != f) && !f.StartsWith('.') && (f.EndsWith(".txt") || f.EndsWith(".json") || f.EndsWith(".model")) && f != "shears-report.json")
            .Order(StringComparer.Ordinal).ToArray();
        return new CheckpointManifest(root, null, files, tensors, companions)
        {
            Format = CheckpointFormat.Onnx,
            DefaultPrunable = prunable.Select(p => p.Initializer.Name).ToHashSet(StringComparer.Ordinal),
            OutputColumns = prunable.Where(p => p.OutputIsColumn).Select(p => p.Initializer.Name).ToHashSet(StringComparer.Ordinal),
            LayerRoles = prunable.Where(p => p.Layer is not null && p.Role is not null).GroupBy(p => p.Initializer.Name, StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => (g.First().Layer!.Value, g.First().Role!), StringComparer.Ordinal),
        };
    }
}
