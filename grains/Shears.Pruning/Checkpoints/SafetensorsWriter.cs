using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Writes one safetensors file tensor by tensor, in the declared order, to a temporary file that
/// <see cref="Complete"/> renames into place; disposing without completing leaves nothing behind.
/// </summary>
public sealed class SafetensorsWriter : IDisposable
{
    private readonly string _path;
    private readonly string _tempPath;
    private readonly (string Name, TensorDType DType, long[] Shape)[] _tensors;
    private readonly long[] _byteLengths;
    private FileStream? _stream;
    private int _next;
    private bool _completed;

    public SafetensorsWriter(
        string path,
        IReadOnlyList<(string Name, TensorDType DType, long[] Shape)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);

        _path = Path.GetFullPath(path);
        _tempPath = _path + ".tmp";
        _tensors = tensors.ToArray();
        _byteLengths = new long[_tensors.Length];

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < _tensors.Length; i++)
        {
            var (name, dtype, shape) = _tensors[i];
            ArgumentNullException.ThrowIfNull(name);
            ArgumentNullException.ThrowIfNull(shape);
            if (name == "__metadata__" || !names.Add(name))
            {
                throw new ArgumentException(name == "__metadata__"
                    ? "'__metadata__' is reserved and cannot name a tensor."
                    : $"Tensor '{name}' is declared twice.", nameof(tensors));
            }
            if (!Enum.IsDefined(dtype))
            {
                throw new ArgumentException($"Tensor '{name}' has an unknown dtype ({(int)dtype}).", nameof(tensors));
            }
            if (shape.Any(d => d < 0))
            {
                throw new ArgumentException($"Tensor '{name}' has a negative dimension in [{string.Join(", ", shape)}].", nameof(tensors));
            }
            _byteLengths[i] = checked(TensorEntry.CountElements(shape) * dtype.ElementSize());
        }

        var header = BuildHeader(_tensors, _byteLengths, metadata);
        HeaderBytes = header.Length;
        FileLength = HeaderBytes + _byteLengths.Sum();

        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        _stream = new FileStream(_tempPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 20);
        try
        {
            _stream.Write(header);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The 8-byte length prefix plus the padded JSON header.</summary>
    public long HeaderBytes { get; }

    /// <summary>The length the finished file will have.</summary>
    public long FileLength { get; }

    /// <summary>Writes the next tensor; it must be the next declared one, with exactly its byte length.</summary>
    public void WriteTensor(string name, ReadOnlySpan<byte> data)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_completed)
        {
            throw new InvalidOperationException($"Tensor '{name}' written after '{_path}' was completed.");
        }
        ObjectDisposedException.ThrowIf(_stream is null, this);
        if (_next >= _tensors.Length)
        {
            throw new InvalidOperationException($"Tensor '{name}' written after all {_tensors.Length} declared tensors of '{_path}'.");
        }
        var (expectedName, dtype, shape) = _tensors[_next];
        if (!string.Equals(name, expectedName, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"Tensor '{name}' written out of order: tensor '{expectedName}' comes next in '{_path}'.");
        }
        if (data.Length != _byteLengths[_next])
        {
            throw new InvalidOperationException(
                $"Tensor '{name}' has {data.Length} bytes; expected {_byteLengths[_next]} (shape [{string.Join(", ", shape)}] of {dtype}).");
        }
        _stream.Write(data);
        _next++;
    }

    /// <summary>Flushes the file to disk and renames it into place, replacing any file there.</summary>
    public void Complete()
    {
        if (_completed)
        {
            return;
        }
        ObjectDisposedException.ThrowIf(_stream is null, this);
        if (_next < _tensors.Length)
        {
            throw new InvalidOperationException(
                $"Tensor '{_tensors[_next].Name}' was never written; {_tensors.Length - _next} of {_tensors.Length} tensors of '{_path}' are missing.");
        }
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        _stream = null;
        File.Move(_tempPath, _path, overwrite: true);
        _completed = true;
    }

    public void Dispose()
    {
        if (_stream is null)
        {
            return;
        }
        _stream.Dispose();
        _stream = null;
        if (!_completed)
        {
            try
            {
                File.Delete(_tempPath);
            }
            catch (IOException)
            {
                // Best effort: the temporary file is harmless and the next writer truncates it.
            }
        }
    }

    /// <summary>
    /// The 8-byte little-endian length and the JSON header, padded with spaces to a multiple of 8 so
    /// that the data starts aligned, as the reference library does.
    /// </summary>
    internal static byte[] BuildHeader(
        IReadOnlyList<(string Name, TensorDType DType, long[] Shape)> tensors,
        IReadOnlyList<long> byteLengths,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var json = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (metadata is not null)
            {
                writer.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata)
                {
                    writer.WriteString(key, value);
                }
                writer.WriteEndObject();
            }
            long offset = 0;
            for (var i = 0; i < tensors.Count; i++)
            {
                var (name, dtype, shape) = tensors[i];
                writer.WriteStartObject(name);
                writer.WriteString("dtype", dtype.ToHeaderName());
                writer.WriteStartArray("shape");
                foreach (var dim in shape)
                {
                    writer.WriteNumberValue(dim);
                }
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + byteLengths[i]);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += byteLengths[i];
            }
            writer.WriteEndObject();
        }

        var length = json.WrittenCount;
        var padded = (length + 7) / 8 * 8;
        var header = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        json.WrittenSpan.CopyTo(header.AsSpan(8));
        header.AsSpan(8 + length).Fill((byte)' ');
        return header;
    }
}
