namespace Shears.Pruning.Checkpoints;

/// <summary>
/// What a checkpoint holds, read from its headers only: files, tensors (ordinal order of names,
/// which defines global position) and the companion files (config, tokenizer) that go with it.
/// </summary>
public enum CheckpointFormat { Safetensors, Onnx }

public sealed class CheckpointManifest
{
    private readonly Dictionary<string, TensorEntry> _byName;
    private readonly Dictionary<string, CheckpointFile> _filesByName;

    public CheckpointManifest(
        string root,
        string? indexFileName,
        IReadOnlyList<CheckpointFile> files,
        IEnumerable<TensorEntry> tensors,
        IReadOnlyList<string> companionFiles)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(companionFiles);

        Root = root;
        IndexFileName = indexFileName;
        Files = files.ToArray();
        CompanionFiles = companionFiles.ToArray();

        _filesByName = new Dictionary<string, CheckpointFile>(StringComparer.Ordinal);
        foreach (var file in Files)
        {
            if (!_filesByName.TryAdd(file.FileName, file))
            {
                throw new ArgumentException($"File '{file.FileName}' is listed twice.", nameof(files));
            }
        }

        var sorted = tensors.ToArray();
        Array.Sort(sorted, static (a, b) => StringComparer.Ordinal.Compare(a.Name, b.Name));
        _byName = new Dictionary<string, TensorEntry>(sorted.Length, StringComparer.Ordinal);
        long total = 0;
        foreach (var tensor in sorted)
        {
            if (!_byName.TryAdd(tensor.Name, tensor))
            {
                throw new ArgumentException($"Tensor '{tensor.Name}' is listed twice.", nameof(tensors));
            }
            if (!_filesByName.ContainsKey(tensor.FileName))
            {
                throw new ArgumentException($"Tensor '{tensor.Name}' names file '{tensor.FileName}', which is not among the files.", nameof(tensors));
            }
            total += tensor.ByteLength;
        }
        Tensors = sorted;
        TotalBytes = total;
    }

    /// <summary>The file format; an ONNX model keeps its tensors inside the protobuf, between other bytes.</summary>
    public CheckpointFormat Format { get; init; } = CheckpointFormat.Safetensors;

    /// <summary>The tensors the format itself marks as prunable (ONNX: MatMul/Gemm weights inside the layers); null: decided by name.</summary>
    public IReadOnlyCollection<string>? DefaultPrunable { get; init; }

    /// <summary>2-D tensors stored [in, out] (ONNX MatMul weights): their output neurons are columns.</summary>
    public IReadOnlyCollection<string> OutputColumns { get; init; } = [];

    /// <summary>
    /// The encoder layer and role of each weight whose names do not say it (ONNX: <c>query</c>, <c>key</c>, <c>value</c>,
    /// <c>attention.output</c>, <c>intermediate</c>, <c>output</c>, read from the bias each MatMul feeds); empty for safetensors.
    /// </summary>
    public IReadOnlyDictionary<string, (int Layer, string Role)> LayerRoles { get; init; } = new Dictionary<string, (int, string)>();

    /// <summary>The directory holding the checkpoint; every file name is relative to it.</summary>
    public string Root { get; }

    /// <summary>The index file name (e.g. model.safetensors.index.json); null for a single-file checkpoint.</summary>
    public string? IndexFileName { get; }

    public IReadOnlyList<CheckpointFile> Files { get; }

    /// <summary>All tensors in ordinal order of their names: the order of global position.</summary>
    public IReadOnlyList<TensorEntry> Tensors { get; }

    /// <summary>Names (relative to <see cref="Root"/>) of the other top-level files to copy to an output: config, tokenizer, vocab.</summary>
    public IReadOnlyList<string> CompanionFiles { get; }

    /// <summary>Sum of the tensors' data bytes (what an index calls total_size).</summary>
    public long TotalBytes { get; }

    public TensorEntry Get(string name) =>
        _byName.TryGetValue(name, out var tensor)
            ? tensor
            : throw new KeyNotFoundException($"Tensor '{name}' is not in the checkpoint at '{Root}'.");

    public bool TryGet(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out TensorEntry? tensor) =>
        _byName.TryGetValue(name, out tensor);

    public bool Contains(string name) => _byName.ContainsKey(name);

    public CheckpointFile GetFile(string fileName) =>
        _filesByName.TryGetValue(fileName, out var file)
            ? file
            : throw new KeyNotFoundException($"File '{fileName}' is not part of the checkpoint at '{Root}'.");

    /// <summary>The full path of a file of this checkpoint.</summary>
    public string PathOf(string fileName) => Path.Combine(Root, fileName);
}
