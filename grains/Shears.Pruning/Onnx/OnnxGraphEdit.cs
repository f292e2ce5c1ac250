namespace Shears.Pruning.Onnx;

/// <summary>
/// A rewrite of an ONNX graph's nodes and initializers (<see cref="OnnxRemovalWriter"/> applies it): nodes left out by
/// their index in the main graph, Identity nodes inserted before a given node, initializers renamed (in their own
/// message and in every node input that reads them) or left out.
/// </summary>
/// <param name="DroppedNodes">Indices into <see cref="OnnxModel.Nodes"/> of the nodes the output does not keep.</param>
/// <param name="Bypasses">Identity nodes, each written just before the node at <c>Before</c> (its index in the input).</param>
/// <param name="Renames">Initializer names to their new names.</param>
/// <param name="DroppedInitializers">Initializers no kept node reads any more.</param>
public sealed record OnnxGraphEdit(
    IReadOnlySet<int> DroppedNodes,
    IReadOnlyList<(int Before, string Input, string Output, string Name)> Bypasses,
    IReadOnlyDictionary<string, string> Renames,
    IReadOnlySet<string> DroppedInitializers)
{
    public static OnnxGraphEdit None { get; } = new(new HashSet<int>(), [], new Dictionary<string, string>(), new HashSet<string>());

    public bool IsEmpty => DroppedNodes.Count == 0 && Bypasses.Count == 0 && Renames.Count == 0 && DroppedInitializers.Count == 0;
}
