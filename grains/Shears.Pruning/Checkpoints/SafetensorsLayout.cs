namespace Shears.Pruning.Checkpoints;

/// <summary>
/// The files of a safetensors checkpoint written with other tensors than its input's (quantized parts, smaller shapes):
/// every input file keeps its name and metadata, its tensors keep their data order, and each is replaced by what a
/// rule declares for it. Offsets follow from the declared shapes alone, so every process that knows the rule computes
/// the same layout.
/// </summary>
public static class SafetensorsLayout
{
    /// <summary>Per output file: its name, header length, length and tensors in data order.</summary>
    public static IReadOnlyList<(string FileName, long HeaderBytes, long FileLength, IReadOnlyList<TensorEntry> Tensors)> Plan(
        CheckpointManifest input, Func<TensorEntry, IEnumerable<(string Name, TensorDType DType, long[] Shape)>> declare)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(declare);
        var files = new List<(string, long, long, IReadOnlyList<TensorEntry>)>();
        foreach (var file in input.Files)
        {
            var declared = input.Tensors.Where(t => t.FileName == file.FileName).OrderBy(t => t.FileOffset).ThenBy(t => t.Name, StringComparer.Ordinal)
                .SelectMany(declare).ToList();
            var lengths = declared.Select(d => checked(TensorEntry.CountElements(d.Shape) * d.DType.ElementSize())).ToArray();
            long headerBytes = SafetensorsWriter.BuildHeader(declared, lengths, file.Metadata).Length;
            var entries = new List<TensorEntry>();
            long offset = headerBytes;
            for (int i = 0; i < declared.Count; i++)
            {
                entries.Add(new TensorEntry(declared[i].Name, declared[i].DType, declared[i].Shape, file.FileName, offset, lengths[i]));
                offset += lengths[i];
            }
            files.Add((file.FileName, headerBytes, offset, entries));
        }
        return files;
    }

    /// <summary>Creates one planned file in <paramref name="root"/>: its header written and its full length set (the data to be filled).</summary>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle Create(CheckpointManifest input, string root, (string FileName, long HeaderBytes, long FileLength, IReadOnlyList<TensorEntry> Tensors) file)
    {
        var declared = file.Tensors.Select(t => (t.Name, t.DType, t.Shape)).ToArray();
        var header = SafetensorsWriter.BuildHeader(declared, file.Tensors.Select(t => t.ByteLength).ToArray(), input.GetFile(file.FileName).Metadata);
        var path = Path.Combine(root, file.FileName);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var target = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.SetLength(target, file.FileLength);
        RandomAccess.Write(target, header, 0);
        return target;
    }
}
