using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Reads safetensors checkpoints (one file, or shards with a Hugging Face index): the manifest from
/// the headers alone, and tensor bytes by positional reads.
/// </summary>
public static class CheckpointReader
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
            var length = new FileInfo(indexPath).Length;
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

    /// <summary>Reads and validates one safetensors header.</summary>
    internal static class SafetensorsHeader
    {
        internal sealed record Parsed(CheckpointFile File, IReadOnlyList<TensorEntry> Tensors);

        private sealed record RawTensor(string Name, TensorDType DType, long[] Shape, long Begin, long End);

        internal static Parsed Read(string root, string fileName)
        {
            var path = Path.Combine(root, fileName);
            using var handle = OpenForRead(path, null);
            var fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8)
            {
                throw new CheckpointFormatException(path, null,
                    $"file is truncated: {fileLength} bytes, expected at least 8 (the header length)");
            }

            Span<byte> prefix = stackalloc byte[8];
            ReadExactly(handle, prefix, 0, path, null);
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > MaxHeaderLength)
            {
                throw new CheckpointFormatException(path, null,
                    $"header length {headerLength} is larger than the {MaxHeaderLength} bytes allowed; not a safetensors file, or a corrupt one");
            }
            if (8 + (long)headerLength > fileLength)
            {
                throw new CheckpointFormatException(path, null,
                    $"header length {headerLength} runs past the end of the file ({fileLength} bytes); the file is truncated or not safetensors");
            }

            var header = GC.AllocateUninitializedArray<byte>((int)headerLength);
            ReadExactly(handle, header, 8, path, null);

            var headerBytes = 8 + (long)headerLength;
            var (metadata, raw) = Parse(header, path);
            var tensors = Validate(raw, fileLength - headerBytes, path)
                .Select(r => new TensorEntry(r.Name, r.DType, r.Shape, fileName, headerBytes + r.Begin, r.End - r.Begin))
                .ToArray();
            return new Parsed(new CheckpointFile(fileName, headerBytes, fileLength, metadata), tensors);
        }

        private static (Dictionary<string, string>? Metadata, List<RawTensor> Tensors) Parse(byte[] header, string path)
        {
            if (!Utf8.IsValid(header))
            {
                throw new CheckpointFormatException(path, null, "header is not valid UTF-8");
            }

            // Utf8JsonReader rather than JsonDocument: it lets duplicate names be seen and refused.
            var reader = new Utf8JsonReader(header, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
            string? current = null;
            try
            {
                if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                {
                    throw new CheckpointFormatException(path, null,
                        $"header must be a JSON object, found {(reader.TokenType == JsonTokenType.None ? "nothing" : reader.TokenType)}");
                }

                var seen = new HashSet<string>(StringComparer.Ordinal);
                var tensors = new List<RawTensor>();
                Dictionary<string, string>? metadata = null;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var name = reader.GetString()!;
                    current = name == MetadataKey ? null : name;
                    if (!seen.Add(name))
                    {
                        throw new CheckpointFormatException(path, current,
                            $"'{name}' appears twice in the header; each tensor name must be unique");
                    }
                    reader.Read();
                    if (name == MetadataKey)
                    {
                        metadata = ReadMetadata(ref reader, path);
                    }
                    else
                    {
                        tensors.Add(ReadTensorInfo(ref reader, path, name));
                    }
                }
                current = null;
                // Anything but whitespace after the object makes Read throw.
                while (reader.Read())
                {
                }
                return (metadata, tensors);
            }
            catch (JsonException e)
            {
                throw new CheckpointFormatException(path, current, $"header is not valid JSON: {e.Message}", e);
            }
        }

        private static Dictionary<string, string>? ReadMetadata(ref Utf8JsonReader reader, string path)
        {
            if (reader.TokenType == JsonTokenType.Null)
            {
                return null;
            }
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new CheckpointFormatException(path, null,
                    $"{MetadataKey} must be an object of strings, found {reader.TokenType}");
            }
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var key = reader.GetString()!;
                reader.Read();
                if (reader.TokenType != JsonTokenType.String)
                {
                    throw new CheckpointFormatException(path, null,
                        $"{MetadataKey}[\"{key}\"] must be a string, found {reader.TokenType}; metadata is a string to string map");
                }
                if (!metadata.TryAdd(key, reader.GetString()!))
                {
                    throw new CheckpointFormatException(path, null, $"{MetadataKey} has the key '{key}' twice");
                }
            }
            return metadata;
        }

        private static RawTensor ReadTensorInfo(ref Utf8JsonReader reader, string path, string name)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new CheckpointFormatException(path, name,
                    $"expected an object with dtype, shape and data_offsets, found {reader.TokenType}");
            }

            string? dtypeName = null;
            long[]? shape = null;
            long[]? offsets = null;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var key = reader.GetString()!;
                reader.Read();
                switch (key)
                {
                    case "dtype":
                        if (dtypeName is not null)
                        {
                            throw new CheckpointFormatException(path, name, "'dtype' appears twice");
                        }
                        if (reader.TokenType != JsonTokenType.String)
                        {
                            throw new CheckpointFormatException(path, name, $"'dtype' must be a string, found {reader.TokenType}");
                        }
                        dtypeName = reader.GetString()!;
                        break;
                    case "shape":
                        if (shape is not null)
                        {
                            throw new CheckpointFormatException(path, name, "'shape' appears twice");
                        }
                        shape = ReadNonNegativeIntegers(ref reader, path, name, "shape");
                        break;
                    case "data_offsets":
                        if (offsets is not null)
                        {
                            throw new CheckpointFormatException(path, name, "'data_offsets' appears twice");
                        }
                        offsets = ReadNonNegativeIntegers(ref reader, path, name, "data_offsets");
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            if (dtypeName is null)
            {
                throw new CheckpointFormatException(path, name, "is missing 'dtype'");
            }
            if (shape is null)
            {
                throw new CheckpointFormatException(path, name, "is missing 'shape'");
            }
            if (offsets is null)
            {
                throw new CheckpointFormatException(path, name, "is missing 'data_offsets'");
            }
            if (!TensorDTypes.TryParse(dtypeName, out var dtype))
            {
                throw new CheckpointFormatException(path, name,
                    $"unknown dtype '{dtypeName}'; expected one of {TensorDTypes.AllHeaderNames}");
            }
            if (offsets.Length != 2 || offsets[0] > offsets[1])
            {
                throw new CheckpointFormatException(path, name,
                    $"data_offsets is [{string.Join(", ", offsets)}]; expected [begin, end] with begin <= end");
            }
            return new RawTensor(name, dtype, shape, offsets[0], offsets[1]);
        }

        private static long[] ReadNonNegativeIntegers(ref Utf8JsonReader reader, string path, string name, string field)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
            {
                throw new CheckpointFormatException(path, name, $"'{field}' must be an array of integers, found {reader.TokenType}");
            }
            var values = new List<long>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var value))
                {
                    throw new CheckpointFormatException(path, name,
                        $"'{field}' must hold integers, found {DescribeToken(ref reader)}");
                }
                if (value < 0)
                {
                    throw new CheckpointFormatException(path, name,
                        $"'{field}' holds the negative value {value}; expected non-negative integers");
                }
                values.Add(value);
            }
            return values.ToArray();
        }

        private static string DescribeToken(ref Utf8JsonReader reader) =>
            reader.TokenType is JsonTokenType.Number or JsonTokenType.String
                ? $"{reader.TokenType} {System.Text.Encoding.UTF8.GetString(reader.ValueSpan)}"
                : reader.TokenType.ToString();

        /// <summary>
        /// The reference library's rule: sorted by offsets, the tensors tile the data region exactly,
        /// each starting where the previous one ends, the last ending at the end of the file.
        /// </summary>
        private static List<RawTensor> Validate(List<RawTensor> tensors, long dataLength, string path)
        {
            foreach (var t in tensors)
            {
                long expected;
                try
                {
                    expected = checked(TensorEntry.CountElements(t.Shape) * t.DType.ElementSize());
                }
                catch (OverflowException e)
                {
                    throw new CheckpointFormatException(path, t.Name,
                        $"shape [{string.Join(", ", t.Shape)}] has more bytes than a file can hold", e);
                }
                if (t.End - t.Begin != expected)
                {
                    throw new CheckpointFormatException(path, t.Name,
                        $"data_offsets [{t.Begin}, {t.End}] span {t.End - t.Begin} bytes; expected {expected} " +
                        $"(shape [{string.Join(", ", t.Shape)}] of {t.DType}, {t.DType.ElementSize()} bytes each)");
                }
            }

            var sorted = tensors
                .OrderBy(t => t.Begin).ThenBy(t => t.End).ThenBy(t => t.Name, StringComparer.Ordinal)
                .ToList();
            long end = 0;
            RawTensor? previous = null;
            foreach (var t in sorted)
            {
                if (t.Begin < end)
                {
                    throw new CheckpointFormatException(path, t.Name,
                        $"data_offsets [{t.Begin}, {t.End}] overlap tensor '{previous!.Name}' [{previous.Begin}, {previous.End}]; expected it to begin at {end}");
                }
                if (t.Begin > end)
                {
                    throw new CheckpointFormatException(path, t.Name,
                        $"data_offsets [{t.Begin}, {t.End}] leave a hole of {t.Begin - end} bytes after " +
                        (previous is null ? "the start of the data" : $"tensor '{previous.Name}'") + $"; expected it to begin at {end}");
                }
                if (t.End > dataLength)
                {
                    throw new CheckpointFormatException(path, t.Name,
                        $"data_offsets [{t.Begin}, {t.End}] run past the end of the file, whose data region has {dataLength} bytes; the file is truncated or the offsets are wrong");
                }
                end = t.End;
                previous = t;
            }
            if (end != dataLength)
            {
                throw new CheckpointFormatException(path, null,
                    $"the data region has {dataLength} bytes but the tensors cover only {end}; expected no bytes after the last tensor");
            }
            return tensors;
        }
    }
}
