using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Reads safetensors checkpoints (one file, or shards with a Hugging Face index): the manifest from
/// the headers alone, and tensor bytes by positional reads.
/// </summary>
public static partial class CheckpointReader
{
    /// <summary>The index name Hugging Face gives a sharded safetensors checkpoint.</summary>
    public const string DefaultIndexFileName = "model.safetensors.index.json";

    /// <summary>The largest header accepted, as in the reference safetensors library.</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const string SafetensorsExtension = ".safetensors";
    private const string IndexSuffix = ".safetensors.index.json";
    private const string MetadataKey = "__metadata__";

    /// <summary>
    /// Reads the manifest of the checkpoint at <paramref name="path"/>: a directory (holding an index
    /// or exactly one .safetensors file), a .safetensors file, or an index file. Reads headers only.
    /// </summary>
    public static CheckpointManifest ReadManifest(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);

        if (Directory.Exists(full))
        {
            return ReadDirectory(Path.TrimEndingDirectorySeparator(full));
        }
        if (File.Exists(full))
        {
            var root = Path.GetDirectoryName(full)!;
            var name = Path.GetFileName(full);
            if (name.EndsWith(IndexSuffix, StringComparison.Ordinal))
            {
                return ReadIndexed(root, name);
            }
            if (name.EndsWith(SafetensorsExtension, StringComparison.Ordinal))
            {
                return ReadSingle(root, name);
            }
            throw new CheckpointFormatException(full, null,
                "expected a checkpoint directory, a .safetensors file or a .safetensors.index.json file");
        }
        throw new CheckpointFormatException(full, null, "no such file or directory");
    }

    /// <summary>Reads the whole tensor into <paramref name="destination"/>, which must be exactly its length.</summary>
    public static void ReadTensor(CheckpointManifest m, TensorEntry t, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(t);
        if (destination.Length != t.ByteLength)
        {
            throw new ArgumentException(
                $"Destination holds {destination.Length} bytes; tensor '{t.Name}' has {t.ByteLength}.", nameof(destination));
        }
        ReadAt(m.PathOf(t.FileName), t.Name, t.FileOffset, destination);
    }

    /// <summary>Reads the whole tensor into a new array.</summary>
    public static byte[] ReadTensor(CheckpointManifest m, TensorEntry t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.ByteLength > Array.MaxLength)
        {
            throw new InvalidOperationException(
                $"Tensor '{t.Name}' has {t.ByteLength} bytes, more than one array holds; read it in row blocks with ReadTensorRange.");
        }
        var buffer = GC.AllocateUninitializedArray<byte>((int)t.ByteLength);
        ReadTensor(m, t, buffer);
        return buffer;
    }

    /// <summary>
    /// Reads <paramref name="destination"/>.Length bytes of the tensor starting at byte
    /// <paramref name="byteStart"/> of its data (e.g. a block of rows).
    /// </summary>
    public static void ReadTensorRange(CheckpointManifest m, TensorEntry t, long byteStart, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(t);
        CheckRange(t, byteStart, destination.Length);
        ReadAt(m.PathOf(t.FileName), t.Name, t.FileOffset + byteStart, destination);
    }

    internal static void CheckRange(TensorEntry t, long byteStart, long length)
    {
        if (byteStart < 0 || byteStart > t.ByteLength || length > t.ByteLength - byteStart)
        {
            throw new ArgumentOutOfRangeException(nameof(byteStart),
                $"Bytes [{byteStart}, {byteStart + length}) are outside tensor '{t.Name}', which has {t.ByteLength} bytes.");
        }
    }

    private static void ReadAt(string path, string tensorName, long offset, Span<byte> destination)
    {
        using var handle = OpenForRead(path, tensorName);
        ReadExactly(handle, destination, offset, path, tensorName);
    }

    internal static SafeFileHandle OpenForRead(string path, string? tensorName)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CheckpointFormatException(path, tensorName, "file does not exist", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(path, tensorName, $"file cannot be opened: {e.Message}", e);
        }
    }

    internal static void ReadExactly(SafeFileHandle handle, Span<byte> destination, long offset, string path, string? tensorName)
    {
        var done = 0;
        while (done < destination.Length)
        {
            var read = RandomAccess.Read(handle, destination[done..], offset + done);
            if (read == 0)
            {
                throw new CheckpointFormatException(path, tensorName,
                    $"file is truncated: it has {RandomAccess.GetLength(handle)} bytes, expected at least {offset + destination.Length}");
            }
            done += read;
        }
    }

    private static CheckpointManifest ReadDirectory(string root)
    {
        var names = Directory.EnumerateFiles(root).Select(Path.GetFileName).OfType<string>().ToList();

        if (names.Contains(DefaultIndexFileName, StringComparer.Ordinal))
        {
            return ReadIndexed(root, DefaultIndexFileName);
        }

        var indices = names.Where(n => n.EndsWith(IndexSuffix, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        if (indices.Count == 1)
        {
            return ReadIndexed(root, indices[0]);
        }
        if (indices.Count > 1)
        {
            throw new CheckpointFormatException(root, null,
                $"holds several indices ({string.Join(", ", indices)}); expected {DefaultIndexFileName} or exactly one index");
        }

        var files = names.Where(n => n.EndsWith(SafetensorsExtension, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        return files.Count switch
        {
            1 => ReadSingle(root, files[0]),
            0 => throw new CheckpointFormatException(root, null,
                $"holds no .safetensors file; expected {DefaultIndexFileName} or one .safetensors file"),
            _ => throw new CheckpointFormatException(root, null,
                $"holds {files.Count} .safetensors files ({string.Join(", ", files)}) but no {DefaultIndexFileName}; expected an index or exactly one file"),
        };
    }

    private static CheckpointManifest ReadSingle(string root, string fileName)
    {
        var parsed = SafetensorsHeader.Read(root, fileName);
        return new CheckpointManifest(root, null, [parsed.File], parsed.Tensors, FindCompanionFiles(root));
    }

    private static CheckpointManifest ReadIndexed(string root, string indexName)
    {
        var indexPath = Path.Combine(root, indexName);
        var weightMap = ReadWeightMap(indexPath);

        // Each file once, in ordinal order; remember a tensor that names it for error messages.
        var fileNames = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (tensor, file) in weightMap)
        {
            fileNames.TryAdd(file, tensor);
        }
        foreach (var (file, tensor) in fileNames)
        {
            if (!File.Exists(Path.Combine(root, file)))
            {
                throw new CheckpointFormatException(indexPath, tensor,
                    $"weight_map names file '{file}', which does not exist in '{root}'");
            }
        }

        var parsed = fileNames.Keys.Select(file => SafetensorsHeader.Read(root, file)).ToList();

        var owner = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in parsed)
        {
            foreach (var t in p.Tensors)
            {
                if (!owner.TryAdd(t.Name, t.FileName))
                {
                    throw new CheckpointFormatException(Path.Combine(root, t.FileName), t.Name,
                        $"appears in both '{owner[t.Name]}' and '{t.FileName}'; a tensor must live in exactly one file");
                }
            }
        }
        foreach (var p in parsed)
        {
            foreach (var t in p.Tensors)
            {
                if (!weightMap.TryGetValue(t.Name, out var mapped))
                {
                    throw new CheckpointFormatException(Path.Combine(root, t.FileName), t.Name,
                        $"is in this file but not in the weight_map of '{indexName}'");
                }
                if (!string.Equals(mapped, t.FileName, StringComparison.Ordinal))
                {
                    throw new CheckpointFormatException(Path.Combine(root, t.FileName), t.Name,
                        $"is in this file but '{indexName}' maps it to '{mapped}'");
                }
            }
        }
        foreach (var (tensor, file) in weightMap)
        {
            if (!owner.ContainsKey(tensor))
            {
                throw new CheckpointFormatException(Path.Combine(root, file), tensor,
                    $"is listed in '{indexName}' for this file, but the file does not hold it");
            }
        }

        return new CheckpointManifest(root, indexName, parsed.Select(p => p.File).ToArray(),
            parsed.SelectMany(p => p.Tensors), FindCompanionFiles(root));
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        byte[] bytes;
        try
        {
            var length = ModelFiles.LengthOf(indexPath);
            if (length > MaxHeaderLength)
            {
                throw new CheckpointFormatException(indexPath, null,
                    $"index is {length} bytes, more than the {MaxHeaderLength} allowed");
            }
            bytes = File.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(indexPath, null, $"index cannot be read: {e.Message}", e);
        }

        // Strings with invalid UTF-8 would parse and then fail when read, outside the checks below.
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new CheckpointFormatException(indexPath, null, "index is not valid UTF-8");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, null, $"index is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var rootElement = document.RootElement;
            if (rootElement.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointFormatException(indexPath, null,
                    $"index must be a JSON object with a \"weight_map\", found {rootElement.ValueKind}");
            }

            JsonElement? weightMapElement = null;
            foreach (var property in rootElement.EnumerateObject())
            {
                if (property.NameEquals("weight_map"))
                {
                    if (weightMapElement is not null)
                    {
                        throw new CheckpointFormatException(indexPath, null, "index has \"weight_map\" twice");
                    }
                    weightMapElement = property.Value;
                }
            }
            if (weightMapElement is not { ValueKind: JsonValueKind.Object } weightMapObject)
            {
                throw new CheckpointFormatException(indexPath, null,
                    "index has no \"weight_map\" object; expected {\"weight_map\": {\"tensor name\": \"file.safetensors\", …}}");
            }

            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in weightMapObject.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                {
                    throw new CheckpointFormatException(indexPath, entry.Name,
                        $"weight_map value must be a file name string, found {entry.Value.ValueKind}");
                }
                var file = entry.Value.GetString()!;
                if (!IsPlainRelativePath(file))
                {
                    throw new CheckpointFormatException(indexPath, entry.Name,
                        $"weight_map names '{file}'; expected a .safetensors file inside the checkpoint directory");
                }
                if (!map.TryAdd(entry.Name, file))
                {
                    throw new CheckpointFormatException(indexPath, entry.Name, "appears twice in weight_map");
                }
            }
            if (map.Count == 0)
            {
                throw new CheckpointFormatException(indexPath, null, "weight_map is empty; expected at least one tensor");
            }
            return map;
        }
    }

    private static bool IsPlainRelativePath(string file) =>
        file.Length > 0
        && !Path.IsPathRooted(file)
        && file.EndsWith(SafetensorsExtension, StringComparison.Ordinal)
        && !file.Split('/', '\\').Any(segment => segment is "" or "." or "..");

    private static readonly HashSet<string> CompanionExtensions = new(StringComparer.OrdinalIgnoreCase)
    {
        ".json", ".txt", ".model", ".jinja", ".tiktoken", ".py", ".md",
    };

    /// <summary>
    /// Top-level files that belong with the weights: config, generation config, tokenizer and vocab
    /// files, chat templates, remote code, readme and licence. Weights in any format, indices of
    /// weights and an earlier Shears report are left out.
    /// </summary>
    internal static IReadOnlyList<string> FindCompanionFiles(string root) =>
        Directory.EnumerateFiles(root)
            .Select(Path.GetFileName)
            .OfType<string>()
            .Where(IsCompanionFile)
            .Order(StringComparer.Ordinal)
            .ToArray();

    private static bool IsCompanionFile(string name)
    {
        if (name.StartsWith('.')
            || name.EndsWith(SafetensorsExtension, StringComparison.Ordinal)
            || name.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase)
            || name.Equals("shears-report.json", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        var extension = Path.GetExtension(name);
        return CompanionExtensions.Contains(extension)
            || (extension.Length == 0 && (name.StartsWith("LICENSE", StringComparison.OrdinalIgnoreCase)
                                          || name.StartsWith("NOTICE", StringComparison.OrdinalIgnoreCase)));
    }
}
