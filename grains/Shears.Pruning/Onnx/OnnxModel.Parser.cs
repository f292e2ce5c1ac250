using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

public sealed partial class OnnxModel
{
    /// <summary>One pass over the file; holds the context (the tensor being read) that errors name.</summary>
    private sealed partial class Parser(string path, ProtoWireReader reader)
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
    }
}
