using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>
/// The initializer data of a graph rewrite (quantization, removal). A model whose initializers are all inside the model
/// file is written the same way. A model with external data keeps that split: every initializer that was external —
/// copied as it was, cut or quantized (the quantized weight's new tensors too) — goes into one new data file beside
/// the output, named as the input's data file when it had one (<c>MODEL_data</c> when it had several), each tensor's
/// bytes at an offset aligned to <see cref="Alignment"/>; the rest stays inline. The data file holds only what the new
/// graph reads, so the weights a rewrite replaced leave no dead bytes behind. <see cref="Commit"/> puts it in place
/// and deletes the input's data files it replaces, when the rewrite is in place.
/// </summary>
internal sealed class OnnxTensorData : IDisposable
{
    private const int TensorRawData = 9, TensorExternalData = 13, TensorDataLocation = 14, External = 1;
    /// <summary>A page: ONNX Runtime can map an aligned tensor instead of reading it.</summary>
    public const int Alignment = 4096;

    private readonly OnnxModel? _model;
    private readonly HashSet<string> _external;
    private readonly string _outputDirectory, _dataName;
    private readonly string? _temp;
    private FileStream? _data;

    private OnnxTensorData(OnnxModel? model, string output)
    {
        _model = model;
        var initializers = model?.Initializers ?? [];
        _external = initializers.Where(i => i.ExternalData is not null).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        _outputDirectory = Path.GetDirectoryName(Path.GetFullPath(output))!;
        var locations = initializers.Where(i => i.ExternalData is not null).Select(i => i.ExternalData!.Location).Distinct().ToArray();
        _dataName = locations.Length == 1 ? locations[0] : Path.GetFileName(output) + "_data";
        if (_external.Count == 0) return;
        string target = Path.Combine(_outputDirectory, _dataName);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        _temp = Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
        _data = new FileStream(_temp, FileMode.CreateNew, FileAccess.Write);
    }

    /// <summary>
    /// The data of <paramref name="input"/> (already read as <paramref name="file"/>), for a rewrite into
    /// <paramref name="output"/>. Only a model with external data is parsed again, to find its data files.
    /// </summary>
    public static OnnxTensorData Open(string input, OnnxGraphFile file, string output)
    {
        const int GraphInitializer = 5;
        bool external = file.GraphFields.Any(f => f.Number == GraphInitializer && f.WireType == 2
            && ProtoFields.Read(file.Graph.AsSpan(f.PayloadStart, f.PayloadLength)).Any(x => x.Number is TensorExternalData || (x.Number == TensorDataLocation && x.Varint == External)));
        return new(external ? OnnxModel.Read(input) : null, output);
    }

    /// <summary>Whether the input keeps <paramref name="name"/>'s data in an external file.</summary>
    public bool IsExternal(string name) => _external.Contains(name);

    /// <summary>
    /// The bytes of initializer <paramref name="name"/> (message <paramref name="tensor"/>, fields <paramref name="fields"/>):
    /// its single <c>raw_data</c>, or its external data; null when it has neither.
    /// </summary>
    public byte[]? Raw(string name, byte[] tensor, List<ProtoFields.Field> fields)
    {
        if (IsExternal(name)) return _model!.ReadRawData(name);
        var raw = fields.Where(x => x.Number == TensorRawData).ToArray();
        return raw.Length == 1 ? tensor.AsSpan(raw[0].PayloadStart, raw[0].PayloadLength).ToArray() : null;
    }

    /// <summary>
    /// Writes an initializer (field <paramref name="field"/> of the graph): <paramref name="header"/> writes its dims, type
    /// and name; then <paramref name="data"/> follows as raw_data, or, when <paramref name="external"/>, into the data file.
    /// </summary>
    public void Write(Stream graph, int field, Action<Stream> header, byte[] data, bool external)
    {
        if (!external || _data is null)
        {
            ProtoFields.MessageField(graph, field, t => { header(t); ProtoFields.BytesField(t, TensorRawData, data); });
            return;
        }
        long offset = (_data.Length + Alignment - 1) / Alignment * Alignment;
        _data.SetLength(offset);
        _data.Position = offset;
        _data.Write(data);
        ProtoFields.MessageField(graph, field, t =>
        {
            header(t);
            foreach (var (key, value) in new[] { ("location", _dataName), ("offset", offset.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                         ("length", data.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)) })
                ProtoFields.MessageField(t, TensorExternalData, e => { ProtoFields.StringField(e, 1, key); ProtoFields.StringField(e, 2, value); });
            ProtoFields.VarintField(t, TensorDataLocation, External);
        });
    }

    /// <summary>
    /// Copies initializer <paramref name="name"/> unchanged but for <paramref name="rename"/> (written last, when given):
    /// byte for byte when inline; when external, every field but its data location, with its bytes moved to the new data file.
    /// </summary>
    public void Copy(Stream graph, int field, string name, byte[] tensor, List<ProtoFields.Field> fields, Action<Stream>? rename = null)
    {
        const int TensorName = 8;
        bool external = IsExternal(name);
        var kept = fields.Where(x => !(external && x.Number is TensorRawData or TensorExternalData or TensorDataLocation) && !(rename is not null && x.Number == TensorName));
        if (!external)
        {
            ProtoFields.MessageField(graph, field, t => { foreach (var x in kept) t.Write(tensor, x.Start, x.End - x.Start); rename?.Invoke(t); });
            return;
        }
        Write(graph, field, t => { foreach (var x in kept) t.Write(tensor, x.Start, x.End - x.Start); rename?.Invoke(t); }, _model!.ReadRawData(name), external: true);
    }

    /// <summary>
    /// Puts the new data file in place (before the graph that reads it is written) and, when the rewrite is in place, deletes
    /// the input's other data files, which nothing reads any more.
    /// </summary>
    public void Commit()
    {
        if (_data is null) return;
        _data.Flush(flushToDisk: false);
        _data.Dispose();
        _data = null;
        string target = Path.Combine(_outputDirectory, _dataName);
        File.Move(_temp!, target, overwrite: true);
        if (Path.GetDirectoryName(Path.GetFullPath(_model!.FilePath)) != _outputDirectory) return;
        foreach (string location in _model.Initializers.Where(i => i.ExternalData is not null).Select(i => i.ExternalData!.Location).Distinct())
            if (location != _dataName) File.Delete(Path.Combine(_outputDirectory, location));
    }

    public void Dispose()
    {
        if (_data is null) return;
        _data.Dispose();
        _data = null;
        File.Delete(_temp!);
    }
}
