using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

public sealed partial class OnnxModel
{
    private sealed partial class Parser
    {
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
