using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>
/// The parts of an ONNX model file that pruning needs: the main graph's initializers (with the byte range of
/// their <c>raw_data</c> in the file) and its nodes. Read by streaming the protobuf: tensor data is located,
/// never loaded.
/// </summary>
public sealed class OnnxModel
{
    private readonly Dictionary<string, OnnxInitializer> _byName;

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

    /// <summary>Reads the <c>raw_data</c> of one initializer from the model file.</summary>
    public byte[] ReadRawData(string initializerName)
    {
        var init = RawInitializer(initializerName);
        var bytes = GC.AllocateUninitializedArray<byte>(checked((int)init.RawDataLength!.Value));
        using var handle = File.OpenHandle(FilePath, FileMode.Open, FileAccess.Read, FileShare.Read);
        var done = 0;
        while (done < bytes.Length)
        {
            var n = RandomAccess.Read(handle, bytes.AsSpan(done), init.RawDataOffset!.Value + done);
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

    /// <summary>One pass over the file; holds the context (the tensor being read) that errors name.</summary>
    private sealed class Parser(string path, ProtoWireReader reader)
    {
        // Field numbers from onnx.proto.
        private const int ModelIrVersion = 1, ModelProducerName = 2, ModelProducerVersion = 3, ModelGraph = 7, ModelOpsetImport = 8;
        private const int OpsetDomain = 1, OpsetVersion = 2;
        private const int GraphNode = 1, GraphName = 2, GraphInitializer = 5, GraphInput = 11, GraphOutput = 12;
        private const int ValueInfoName = 1;
        private const int NodeInput = 1, NodeOutput = 2, NodeName = 3, NodeOpType = 4, NodeAttribute = 5, NodeDomain = 7;
        private const int AttributeName = 1, AttributeInt = 3, AttributeType = 20;
        private const long AttributeTypeInt = 2;
        private const int TensorDims = 1, TensorDataType = 2, TensorSegment = 3, TensorFloatData = 4, TensorInt32Data = 5,
            TensorStringData = 6, TensorInt64Data = 7, TensorName = 8, TensorRawData = 9, TensorDoubleData = 10,
            TensorUInt64Data = 11, TensorExternalData = 13, TensorDataLocation = 14;
        private const int EntryKey = 1, EntryValue = 2;
        private const long DataLocationExternal = 1;

        private string? _tensor; // the initializer being read, for error messages

        public OnnxModel ReadModel()
        {
            try
            {
                return ReadModelCore();
            }
            catch (ProtoWireException e)
            {
                throw new CheckpointFormatException(path, _tensor, "not a valid ONNX protobuf: " + e.Message, e);
            }
        }

        private OnnxModel ReadModelCore()
        {
            var end = reader.Length;
            long irVersion = 0;
            string producerName = "", producerVersion = "";
            var opsets = new Dictionary<string, long>(StringComparer.Ordinal);
            GraphParts? graph = null;
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case ModelIrVersion:
                        Expect(wire, WireType.Varint, "ModelProto.ir_version");
                        irVersion = reader.ReadInt64(end);
                        break;
                    case ModelProducerName:
                        producerName = ReadString(wire, end, "ModelProto.producer_name");
                        break;
                    case ModelProducerVersion:
                        producerVersion = ReadString(wire, end, "ModelProto.producer_version");
                        break;
                    case ModelOpsetImport:
                        var (domain, version) = ReadOpset(SubmessageEnd(wire, end, "ModelProto.opset_import"));
                        opsets[domain] = version;
                        break;
                    case ModelGraph:
                        var graphStart = reader.Position;
                        var graphEnd = SubmessageEnd(wire, end, "ModelProto.graph");
                        if (graph is not null)
                        {
                            throw Format($"ModelProto has a second graph field at byte {graphStart}; a model has one main graph");
                        }
                        graph = ReadGraph(graphEnd);
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            if (graph is null)
            {
                throw Format("the file holds no graph (ModelProto field 7): it is not an ONNX model");
            }

            var byName = new Dictionary<string, OnnxInitializer>(StringComparer.Ordinal);
            foreach (var init in graph.Initializers)
            {
                if (!byName.TryAdd(init.Name, init))
                {
                    throw new CheckpointFormatException(path, init.Name, "two initializers of the graph have this name; initializer names must be unique");
                }
            }
            return new OnnxModel(path, reader.Length, irVersion, producerName, producerVersion, opsets, graph.Name,
                graph.Initializers, graph.Nodes, graph.Inputs, graph.Outputs, byName);
        }

        private (string Domain, long Version) ReadOpset(long end)
        {
            string domain = "";
            long version = 0;
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case OpsetDomain:
                        domain = ReadString(wire, end, "OperatorSetIdProto.domain");
                        break;
                    case OpsetVersion:
                        Expect(wire, WireType.Varint, "OperatorSetIdProto.version");
                        version = reader.ReadInt64(end);
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            return (domain, version);
        }

        private sealed record GraphParts(string Name, List<OnnxInitializer> Initializers, List<OnnxNode> Nodes, List<string> Inputs, List<string> Outputs);

        private GraphParts ReadGraph(long end)
        {
            var parts = new GraphParts("", [], [], [], []);
            var name = "";
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case GraphNode:
                        parts.Nodes.Add(ReadNode(SubmessageEnd(wire, end, "GraphProto.node")));
                        break;
                    case GraphName:
                        name = ReadString(wire, end, "GraphProto.name");
                        break;
                    case GraphInitializer:
                        var at = reader.Position;
                        parts.Initializers.Add(ReadTensor(SubmessageEnd(wire, end, "GraphProto.initializer"), parts.Initializers.Count, at));
                        _tensor = null;
                        break;
                    case GraphInput:
                        parts.Inputs.Add(ReadValueInfoName(SubmessageEnd(wire, end, "GraphProto.input")));
                        break;
                    case GraphOutput:
                        parts.Outputs.Add(ReadValueInfoName(SubmessageEnd(wire, end, "GraphProto.output")));
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            return parts with { Name = name };
        }

        private string ReadValueInfoName(long end)
        {
            var name = "";
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                if (field == ValueInfoName)
                {
                    name = ReadString(wire, end, "ValueInfoProto.name");
                }
                else
                {
                    reader.SkipValue(wire, end);
                }
            }
            return name;
        }

        private OnnxNode ReadNode(long end)
        {
            string name = "", opType = "", domain = "";
            var inputs = new List<string>();
            var outputs = new List<string>();
            var ints = new Dictionary<string, long>(StringComparer.Ordinal);
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case NodeInput:
                        inputs.Add(ReadString(wire, end, "NodeProto.input"));
                        break;
                    case NodeOutput:
                        outputs.Add(ReadString(wire, end, "NodeProto.output"));
                        break;
                    case NodeName:
                        name = ReadString(wire, end, "NodeProto.name");
                        break;
                    case NodeOpType:
                        opType = ReadString(wire, end, "NodeProto.op_type");
                        break;
                    case NodeDomain:
                        domain = ReadString(wire, end, "NodeProto.domain");
                        break;
                    case NodeAttribute:
                        if (ReadIntAttribute(SubmessageEnd(wire, end, "NodeProto.attribute")) is { } attribute)
                        {
                            ints[attribute.Name] = attribute.Value;
                        }
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            return new OnnxNode(name, opType, domain, inputs, outputs, ints);
        }

        /// <summary>Reads an attribute's name and integer value; tensors and subgraphs inside it are skipped.</summary>
        private (string Name, long Value)? ReadIntAttribute(long end)
        {
            var name = "";
            long? value = null;
            long? type = null;
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case AttributeName:
                        name = ReadString(wire, end, "AttributeProto.name");
                        break;
                    case AttributeInt:
                        Expect(wire, WireType.Varint, "AttributeProto.i");
                        value = reader.ReadInt64(end);
                        break;
                    case AttributeType:
                        Expect(wire, WireType.Varint, "AttributeProto.type");
                        type = reader.ReadInt64(end);
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            return value is { } v && (type is null || type == AttributeTypeInt) ? (name, v) : null;
        }

        private OnnxInitializer ReadTensor(long end, int index, long start)
        {
            _tensor = null;
            var dims = new List<long>();
            long dataType = 0;
            var name = "";
            long? rawOffset = null, rawLength = null;
            long? floatCount = null;
            var typedFields = new List<string>();
            var external = new List<(string Key, string Value)>();
            long dataLocation = 0;
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case TensorDims:
                        ReadRepeatedVarints(wire, end, "TensorProto.dims", dims);
                        break;
                    case TensorDataType:
                        Expect(wire, WireType.Varint, "TensorProto.data_type");
                        dataType = reader.ReadInt64(end);
                        break;
                    case TensorSegment:
                        throw Format("the tensor is stored in segments (TensorProto.segment), which Shears does not read");
                    case TensorName:
                        name = ReadString(wire, end, "TensorProto.name");
                        _tensor = name.Length > 0 ? name : null;
                        break;
                    case TensorRawData:
                        var payloadEnd = SubmessageEnd(wire, end, "TensorProto.raw_data");
                        if (rawOffset is not null)
                        {
                            throw Format("the tensor has two raw_data fields");
                        }
                        rawOffset = reader.Position;
                        rawLength = payloadEnd - reader.Position;
                        reader.SkipTo(payloadEnd);
                        break;
                    case TensorFloatData:
                        typedFields.Add("float_data");
                        floatCount = (floatCount ?? 0) + SkipRepeatedFixed(wire, end, WireType.Fixed32, 4, "TensorProto.float_data");
                        break;
                    case TensorDoubleData:
                        typedFields.Add("double_data");
                        SkipRepeatedFixed(wire, end, WireType.Fixed64, 8, "TensorProto.double_data");
                        break;
                    case TensorInt32Data or TensorInt64Data or TensorUInt64Data:
                        typedFields.Add(field switch { TensorInt32Data => "int32_data", TensorInt64Data => "int64_data", _ => "uint64_data" });
                        if (wire is not (WireType.Varint or WireType.LengthDelimited))
                        {
                            throw Format($"TensorProto field {field} has wire type {(int)wire}; expected varints");
                        }
                        reader.SkipValue(wire, end);
                        break;
                    case TensorStringData:
                        typedFields.Add("string_data");
                        Expect(wire, WireType.LengthDelimited, "TensorProto.string_data");
                        reader.SkipValue(wire, end);
                        break;
                    case TensorExternalData:
                        external.Add(ReadEntry(SubmessageEnd(wire, end, "TensorProto.external_data")));
                        break;
                    case TensorDataLocation:
                        Expect(wire, WireType.Varint, "TensorProto.data_location");
                        dataLocation = reader.ReadInt64(end);
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }

            if (name.Length == 0)
            {
                throw Format($"initializer #{index} (at byte {start}) has no name; every initializer must have one");
            }
            var type = (OnnxElementType)dataType;
            if (dataType <= 0 || dataType > int.MaxValue)
            {
                throw Format($"data_type {dataType} is not a tensor element type");
            }
            long count = 1;
            foreach (var dim in dims)
            {
                if (dim < 0)
                {
                    throw Format($"dims [{string.Join(", ", dims)}] has a negative dimension");
                }
                count = dim == 0 || count == 0 ? 0
                    : count > long.MaxValue / dim ? throw Format($"dims [{string.Join(", ", dims)}] overflow 64 bits")
                    : count * dim;
            }
            var dimsText = $"[{string.Join(", ", dims)}]";
            long? expectedBytes;
            try
            {
                expectedBytes = type.RawByteLength(count);
            }
            catch (OverflowException)
            {
                throw Format($"dims {dimsText} of {type.ToOnnxName()} overflow 64 bits of bytes");
            }
            var distinctTyped = typedFields.Distinct().ToList();
            var sources = (rawOffset is null ? 0 : 1) + (external.Count > 0 || dataLocation == DataLocationExternal ? 1 : 0) + (distinctTyped.Count > 0 ? 1 : 0);
            if (sources > 1 || distinctTyped.Count > 1)
            {
                var used = new List<string>(distinctTyped);
                if (rawOffset is not null) used.Add("raw_data");
                if (external.Count > 0 || dataLocation == DataLocationExternal) used.Add("external data");
                throw Format($"the tensor stores its data in more than one place ({string.Join(", ", used)})");
            }

            if (rawOffset is { } offset)
            {
                if (type == OnnxElementType.String)
                {
                    throw Format("a STRING tensor has raw_data; strings must be stored in string_data");
                }
                if (expectedBytes is { } expected && rawLength != expected)
                {
                    throw Format($"raw_data has {rawLength} bytes but dims {dimsText} of {type.ToOnnxName()} need {expected}");
                }
                return new OnnxInitializer(name, type, [.. dims], OnnxDataStorage.RawData, offset, rawLength, null);
            }
            if (external.Count > 0 || dataLocation == DataLocationExternal)
            {
                var ext = ExternalData(external, dataLocation);
                if (expectedBytes is { } expected && ext.Length is { } length && length != expected)
                {
                    throw Format($"external data has length {length} but dims {dimsText} of {type.ToOnnxName()} need {expected} bytes");
                }
                return new OnnxInitializer(name, type, [.. dims], OnnxDataStorage.External, null, null, ext);
            }
            if (floatCount is { } floats && floats != count && type == OnnxElementType.Float)
            {
                throw Format($"float_data has {floats} values but dims {dimsText} hold {count}");
            }
            if (distinctTyped.Count > 0)
            {
                return new OnnxInitializer(name, type, [.. dims], OnnxDataStorage.TypedField, null, null, null);
            }
            if (count != 0)
            {
                throw Format($"the tensor has dims {dimsText} ({count} elements) but no data");
            }
            return new OnnxInitializer(name, type, [.. dims], OnnxDataStorage.None, null, null, null);
        }

        private OnnxExternalData ExternalData(List<(string Key, string Value)> entries, long dataLocation)
        {
            if (dataLocation != DataLocationExternal)
            {
                throw Format("the tensor has external_data entries but its data_location is not EXTERNAL");
            }
            string? location = null;
            long offset = 0;
            long? length = null;
            foreach (var (key, value) in entries)
            {
                switch (key)
                {
                    case "location":
                        location = value;
                        break;
                    case "offset":
                        offset = ParseExternalNumber(key, value);
                        break;
                    case "length":
                        length = ParseExternalNumber(key, value);
                        break;
                }
            }
            if (string.IsNullOrEmpty(location))
            {
                throw Format("the tensor's data is EXTERNAL but external_data has no \"location\"");
            }
            return new OnnxExternalData(location, offset, length);
        }

        private long ParseExternalNumber(string key, string value) =>
            long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n)
                ? n
                : throw Format($"external_data \"{key}\" is \"{value}\", not a non-negative integer");

        private (string Key, string Value) ReadEntry(long end)
        {
            string key = "", value = "";
            while (reader.TryReadTag(end, out var field, out var wire))
            {
                switch (field)
                {
                    case EntryKey:
                        key = ReadString(wire, end, "StringStringEntryProto.key");
                        break;
                    case EntryValue:
                        value = ReadString(wire, end, "StringStringEntryProto.value");
                        break;
                    default:
                        reader.SkipValue(wire, end);
                        break;
                }
            }
            return (key, value);
        }

        /// <summary>Reads a repeated int64 field written either packed or one value per key.</summary>
        private void ReadRepeatedVarints(WireType wire, long end, string what, List<long> into)
        {
            if (wire == WireType.Varint)
            {
                into.Add(reader.ReadInt64(end));
                return;
            }
            var packedEnd = SubmessageEnd(wire, end, what);
            while (reader.Position < packedEnd)
            {
                into.Add(reader.ReadInt64(packedEnd));
            }
        }

        /// <summary>Skips a repeated fixed-width field (packed or not) and returns how many values it held.</summary>
        private long SkipRepeatedFixed(WireType wire, long end, WireType unpacked, int width, string what)
        {
            if (wire == unpacked)
            {
                reader.SkipValue(wire, end);
                return 1;
            }
            var packedEnd = SubmessageEnd(wire, end, what);
            var bytes = packedEnd - reader.Position;
            if (bytes % width != 0)
            {
                throw Format($"packed {what} has {bytes} bytes, not a multiple of {width}");
            }
            reader.SkipTo(packedEnd);
            return bytes / width;
        }

        private string ReadString(WireType wire, long end, string what) => reader.ReadString(SubmessageEnd(wire, end, what));

        private long SubmessageEnd(WireType wire, long end, string what)
        {
            Expect(wire, WireType.LengthDelimited, what);
            return reader.ReadLengthDelimitedEnd(end, what);
        }

        private void Expect(WireType actual, WireType expected, string what)
        {
            if (actual != expected)
            {
                throw Format($"{what} has wire type {(int)actual} ({actual}); onnx.proto declares {(int)expected} ({expected})");
            }
        }

        private CheckpointFormatException Format(string problem) => new(path, _tensor, problem);
    }
}
