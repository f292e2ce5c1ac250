using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;

namespace Shears.Pruning;

/// <summary>Reads the manifest of whatever model format a path holds: safetensors (single or sharded) or ONNX.</summary>
public static class ModelFiles
{
    public static CheckpointManifest ReadManifest(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(full) && full.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            return OnnxCheckpoint.ReadManifest(full);
        if (Directory.Exists(full) && !Directory.EnumerateFiles(full, "*.safetensors*").Any())
        {
            var onnx = Directory.GetFiles(full, "*.onnx");
            if (onnx.Length == 1) return OnnxCheckpoint.ReadManifest(onnx[0]);
            if (onnx.Length > 1)
                throw new CheckpointFormatException(full, null, $"holds several ONNX models ({string.Join(", ", onnx.Select(Path.GetFileName))}); name one with --model");
        }
        return CheckpointReader.ReadManifest(full);
    }

    /// <summary>
    /// The length of the file <paramref name="path"/> leads to, links followed (a FileInfo of a link gives the link's own
    /// length: a Hugging Face cache's snapshot folder holds nothing but links into its blobs).
    /// </summary>
    public static long LengthOf(string path)
    {
        using var handle = File.OpenHandle(path);
        return RandomAccess.GetLength(handle);
    }
}
