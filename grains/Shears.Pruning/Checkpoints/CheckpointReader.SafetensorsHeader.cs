using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

public static partial class CheckpointReader
{
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
