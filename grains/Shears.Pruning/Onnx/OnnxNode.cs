namespace Shears.Pruning.Onnx;

/// <summary>
/// One node of the main graph. Only integer attributes are kept (<see cref="IntAttributes"/>, e.g. Gemm's
/// transB); attributes holding tensors or subgraphs are skipped unread.
/// </summary>
public sealed record OnnxNode(
    string Name,
    string OpType,
    string Domain,
    IReadOnlyList<string> Inputs,
    IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, long> IntAttributes)
{
    /// <summary>The integer attribute, or <paramref name="fallback"/> when the node does not set it.</summary>
    public long IntAttribute(string name, long fallback) => IntAttributes.TryGetValue(name, out var value) ? value : fallback;
}
