using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>
/// The parts of an ONNX model file that pruning needs: the main graph's initializers (with the byte range of
/// their <c>raw_data</c> in the file) and its nodes. Read by streaming the protobuf: tensor data is located,
/// never loaded.
/// </summary>
public sealed partial class OnnxModel
{
    private readonly Dictionary<string, OnnxInitializer> _byName;
    // The model as a checkpoint, read once when an external initializer is first read: its data files checked and located.
    private CheckpointManifest? _asCheckpoint;

    private OnnxModel(
        string filePath,
        long fileLength,
        long irVersion,
        string producerName,
        string producerVersion,
        IReadOnlyDictionary<string, long> opsets,
        string graphName,
        IReadOnlyList<OnnxInitializer> initializers,
        IReadOnlyList<OnnxNode> nodes,
        IReadOnlyList<string> graphInputs,
        IReadOnlyList<string> graphOutputs,
        Dictionary<string, OnnxInitializer> byName)
    {
        FilePath = filePath;
        FileLength = fileLength;
        IrVersion = irVersion;
        ProducerName = producerName;
        ProducerVersion = producerVersion;
        Opsets = opsets;
        GraphName = graphName;
        Initializers = initializers;
        Nodes = nodes;
        GraphInputs = graphInputs;
        GraphOutputs = graphOutputs;
        _byName = byName;
    }

    /// <summary>The full path of the model file that was read.</summary>
    public string FilePath { get; }

    public long FileLength { get; }

    public long IrVersion { get; }

    public string ProducerName { get; }

    public string ProducerVersion { get; }

    /// <summary>Operator set versions by domain ("" is the default ONNX domain).</summary>
    public IReadOnlyDictionary<string, long> Opsets { get; }

    public string GraphName { get; }

    /// <summary>The main graph's initializers, in file order.</summary>
    public IReadOnlyList<OnnxInitializer> Initializers { get; }

    /// <summary>The main graph's nodes, in file (topological) order. Nodes of subgraphs are not listed.</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }

    /// <summary>Names of the main graph's inputs (which may include initializers, for old IR versions).</summary>
    public IReadOnlyList<string> GraphInputs { get; }

    public IReadOnlyList<string> GraphOutputs { get; }

    public OnnxInitializer? FindInitializer(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The weights of MatMul and Gemm nodes that can be pruned, with their layers (see <see cref="OnnxPrunableWeights.Find"/>).</summary>
    public IReadOnlyList<OnnxPrunable> FindPrunable(bool includeOutsideLayers = false) => OnnxPrunableWeights.Find(this, includeOutsideLayers);

    /// <summary>Reads and validates the model at <paramref name="path"/>.</summary>
    /// <exception cref="CheckpointFormatException">The file is not a well-formed ONNX model.</exception>
    public static OnnxModel Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var fullPath = Path.GetFullPath(path);
        FileStream stream;
        try
        {
            stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException)
        {
            throw new CheckpointFormatException(fullPath, null, "the ONNX model file cannot be opened: " + e.Message, e);
        }
        using var reader = new ProtoWireReader(stream);
        return new Parser(fullPath, reader).ReadModel();
    }

    /// <summary>
    /// Reads the bytes of one initializer: its <c>raw_data</c> in the model file, or its external data (the file beside the
    /// model, checked as <see cref="OnnxCheckpoint"/> checks it).
    /// </summary>
    public byte[] ReadRawData(string initializerName)
    {
        ArgumentNullException.ThrowIfNull(initializerName);
        string path = FilePath;
        long start, length;
        if (_byName.TryGetValue(initializerName, out var stored) && stored.ExternalData is not null)
        {
            var manifest = _asCheckpoint ??= OnnxCheckpoint.ReadManifest(FilePath);
            var entry = manifest.Get(initializerName);
            (path, start, length) = (manifest.PathOf(entry.FileName), entry.FileOffset, entry.ByteLength);
        }
        else
        {
            var init = RawInitializer(initializerName);
            (start, length) = (init.RawDataOffset!.Value, init.RawDataLength!.Value);
        }
        var bytes = GC.AllocateUninitializedArray<byte>(checked((int)length));
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var done = 0;
        while (done < bytes.Length)
        {
            var n = RandomAccess.Read(handle, bytes.AsSpan(done), start + done);
            if (n == 0)
            {
                throw new CheckpointFormatException(FilePath, initializerName, "the file ended inside the tensor's raw_data: it changed after it was read");
            }
            done += n;
        }
        return bytes;
    }

    /// <summary>
    /// Copies <paramref name="input"/> to <paramref name="output"/> byte for byte, except the <c>raw_data</c> of the
    /// initializers named in <paramref name="replacements"/>, which receive the given bytes (of the same length).
    /// The output appears atomically: it is written to a temporary file beside it, then renamed.
    /// </summary>
    public static void WriteWithReplacedData(string input, string output, IReadOnlyDictionary<string, byte[]> replacements) =>
        Read(input).WriteWithReplacedData(output, replacements);

    /// <summary>As the static overload, for this model's own file (which must not have changed since it was read).</summary>
    public void WriteWithReplacedData(string output, IReadOnlyDictionary<string, byte[]> replacements)
    {
        ArgumentException.ThrowIfNullOrEmpty(output);
        ArgumentNullException.ThrowIfNull(replacements);
        var writes = new List<(long Offset, byte[] Bytes)>(replacements.Count);
        foreach (var (name, bytes) in replacements)
        {
            var init = RawInitializer(name);
            ArgumentNullException.ThrowIfNull(bytes, $"{nameof(replacements)}[{name}]");
            if (bytes.LongLength != init.RawDataLength)
            {
                throw new ArgumentException(
                    $"The replacement for initializer '{name}' of '{FilePath}' has {bytes.LongLength} bytes; its raw_data has {init.RawDataLength}.",
                    nameof(replacements));
            }
            writes.Add((init.RawDataOffset!.Value, bytes));
        }

        var target = Path.GetFullPath(output);
        var directory = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.Copy(FilePath, temp, overwrite: false);
            using (var handle = File.OpenHandle(temp, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
            {
                var length = RandomAccess.GetLength(handle);
                if (length != FileLength)
                {
                    throw new CheckpointFormatException(FilePath, null, $"the file has {length} bytes now but had {FileLength} when it was read");
                }
                foreach (var (offset, bytes) in writes)
                {
                    RandomAccess.Write(handle, bytes, offset);
                }
                RandomAccess.FlushToDisk(handle);
            }
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    private OnnxInitializer RawInitializer(string name)
    {
        if (!_byName.TryGetValue(name, out var init))
        {
            throw new ArgumentException($"The ONNX model '{FilePath}' has no initializer named '{name}'.", nameof(name));
        }
        if (init.RawDataOffset is null)
        {
            throw new ArgumentException(
                $"Initializer '{name}' of '{FilePath}' keeps its data in {init.Storage}, not in raw_data; only raw_data can be read or replaced in place.",
                nameof(name));
        }
        return init;
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
