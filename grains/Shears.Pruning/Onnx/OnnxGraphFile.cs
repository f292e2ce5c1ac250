using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>An ONNX model read into memory as protobuf fields, for writers that rewrite its graph and copy the rest.</summary>
internal sealed record OnnxGraphFile(byte[] Model, List<ProtoFields.Field> ModelFields, ProtoFields.Field GraphField, byte[] Graph, List<ProtoFields.Field> GraphFields)
{
    private const int ModelGraph = 7;

    public static OnnxGraphFile Read(string input)
    {
        byte[] model = File.ReadAllBytes(input);
        List<ProtoFields.Field> modelFields, graphFields;
        try { modelFields = ProtoFields.Read(model); }
        catch (FormatException e) { throw new CheckpointFormatException(input, null, $"not an ONNX model: {e.Message}"); }
        var graphField = modelFields.LastOrDefault(f => f.Number == ModelGraph && f.WireType == 2);
        if (graphField.End == 0) throw new CheckpointFormatException(input, null, "the model has no graph");
        var graph = model.AsSpan(graphField.PayloadStart, graphField.PayloadLength).ToArray();
        try { graphFields = ProtoFields.Read(graph); }
        catch (FormatException e) { throw new CheckpointFormatException(input, null, $"the graph is malformed: {e.Message}"); }
        return new OnnxGraphFile(model, modelFields, graphField, graph, graphFields);
    }

    /// <summary>The model's fields in order with the graph replaced by <paramref name="newGraph"/>, then <paramref name="append"/>'s fields.</summary>
    public MemoryStream WithGraph(MemoryStream newGraph, Action<Stream>? append = null)
    {
        var newModel = new MemoryStream();
        foreach (var f in ModelFields)
        {
            if (f.Start == GraphField.Start) { ProtoFields.BytesField(newModel, ModelGraph, newGraph.GetBuffer().AsSpan(0, (int)newGraph.Length)); continue; }
            newModel.Write(Model, f.Start, f.End - f.Start);
        }
        append?.Invoke(newModel);
        return newModel;
    }

    /// <summary>Writes <paramref name="model"/> to <paramref name="output"/> through a temporary file beside it, renamed into place.</summary>
    public static void WriteAtomically(string output, MemoryStream model)
    {
        var target = Path.GetFullPath(output);
        var temp = Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(temp, model.GetBuffer().AsSpan(0, (int)model.Length).ToArray());
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
