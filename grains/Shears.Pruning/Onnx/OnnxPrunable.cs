using System.Text.RegularExpressions;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Onnx;

/// <summary>
/// A weight matrix of a MatMul or Gemm node that can be pruned.
/// <para>
/// <see cref="Module"/> is the layer's name in the framework the model came from (e.g.
/// <c>encoder.layer.3.attention.self.query</c>), recovered from the weight's own name, the node's name or the
/// bias added to the node's output — exporters often give the weight a bare number. <see cref="Layer"/> is the
/// block index in it, <see cref="Role"/> what the matrix does inside the block.
/// </para>
/// <para>
/// <see cref="OutputIsColumn"/>: MatMul computes y = x·W with W stored [in, out], so one output neuron is a column
/// of the stored matrix; Gemm with transB=1 stores [out, in] (PyTorch's Linear layout) and a neuron is a row.
/// Structured patterns over neurons follow this, not the storage order.
/// </para>
/// </summary>
public sealed record OnnxPrunable(
    OnnxInitializer Initializer,
    string NodeName,
    string OpType,
    string? Module,
    int? Layer,
    string? Role,
    bool OutputIsColumn)
{
    /// <summary>The initializer's name (what the checkpoint stores; may be a bare number).</summary>
    public string Name => Initializer.Name;

    /// <summary>Inputs of the layer: the stored rows when <see cref="OutputIsColumn"/>, else the columns.</summary>
    public long InFeatures => OutputIsColumn ? Initializer.Dims[0] : Initializer.Dims[1];

    /// <summary>Output neurons of the layer: the stored columns when <see cref="OutputIsColumn"/>, else the rows.</summary>
    public long OutFeatures => OutputIsColumn ? Initializer.Dims[1] : Initializer.Dims[0];
}

/// <summary>Finds the prunable weights of an ONNX graph and names them by walking the graph.</summary>
public static partial class OnnxPrunableWeights
{
    /// <summary>
    /// The initializers that feed input B of a MatMul or Gemm node, hold raw fp32/fp16/bf16 data and are 2-D, in
    /// graph order. By default only those inside numbered blocks (a <see cref="OnnxPrunable.Layer"/> was found):
    /// the linear layers of the encoder or decoder, not a pooler or an output head.
    /// A weight used by several nodes is listed once; one whose uses disagree on orientation is left out.
    /// </summary>
    public static IReadOnlyList<OnnxPrunable> Find(OnnxModel model, bool includeOutsideLayers = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        var consumers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        foreach (var node in model.Nodes)
        {
            foreach (var input in node.Inputs)
            {
                if (input.Length == 0)
                {
                    continue;
                }
                if (!consumers.TryGetValue(input, out var list))
                {
                    consumers[input] = list = [];
                }
                list.Add(node);
            }
        }

        var found = new List<OnnxPrunable>();
        var orientation = new Dictionary<string, bool>(StringComparer.Ordinal);
        var conflicting = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in model.Nodes)
        {
            if (!IsStandardDomain(node.Domain) || node.Inputs.Count < 2 || node.OpType is not ("MatMul" or "Gemm"))
            {
                continue;
            }
            var weight = model.FindInitializer(node.Inputs[1]);
            if (weight is null || weight.Storage is not (OnnxDataStorage.RawData or OnnxDataStorage.External) || weight.Dims.Length != 2 || weight.DataType is not { } dtype || !dtype.IsPrunable())
            {
                continue;
            }
            var outputIsColumn = node.OpType == "MatMul" || node.IntAttribute("transB", 0) == 0;
            if (orientation.TryGetValue(weight.Name, out var earlier))
            {
                if (earlier != outputIsColumn)
                {
                    conflicting.Add(weight.Name);
                }
                continue;
            }
            orientation[weight.Name] = outputIsColumn;

            var module = ModuleOf(model, node, weight, outputIsColumn, consumers);
            var (layer, role) = module is null ? (null, null) : LayerAndRole(module);
            found.Add(new OnnxPrunable(weight, node.Name, node.OpType, module, layer, role, outputIsColumn));
        }
        return [.. found.Where(p => !conflicting.Contains(p.Name) && (includeOutsideLayers || p.Layer is not null))];
    }

    /// <summary>
    /// Splits a module name into its block index and its role inside the block. BERT's names map to the roles
    /// query, key, value, attention.output, intermediate and output; other architectures keep the rest of the
    /// name (e.g. <c>self_attn.q_proj</c>).
    /// </summary>
    public static (int? Layer, string? Role) LayerAndRole(string module)
    {
        var match = LayerPattern().Match(module);
        if (!match.Success || !int.TryParse(match.Groups["index"].ValueSpan, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var layer))
        {
            return (null, null);
        }
        var rest = module[(match.Index + match.Length)..].TrimStart('.');
        var role = rest switch
        {
            "attention.self.query" => "query",
            "attention.self.key" => "key",
            "attention.self.value" => "value",
            "attention.output.dense" => "attention.output",
            "intermediate.dense" => "intermediate",
            "output.dense" => "output",
            "" => null,
            _ => rest,
        };
        return (layer, role);
    }

    private static bool IsStandardDomain(string domain) => domain is "" or "ai.onnx";

    /// <summary>
    /// The framework's name of the layer: the weight's own name when it is one, else the node's path-like name,
    /// else the bias that the graph adds to the node's output.
    /// </summary>
    private static string? ModuleOf(OnnxModel model, OnnxNode node, OnnxInitializer weight, bool outputIsColumn, Dictionary<string, List<OnnxNode>> consumers)
    {
        if (StripSuffix(weight.Name, ".weight") is { } fromWeight && IsModuleName(fromWeight))
        {
            return fromWeight;
        }
        if (node.Name.Contains('/', StringComparison.Ordinal))
        {
            // "/encoder/layer.3/attention/self/query/MatMul" → "encoder.layer.3.attention.self.query"
            var path = node.Name.Trim('/').Split('/');
            if (path.Length > 1)
            {
                return string.Join('.', path[..^1]);
            }
        }
        var outFeatures = outputIsColumn ? weight.Dims[1] : weight.Dims[0];
        if (node.OpType == "Gemm" && node.Inputs.Count > 2 && BiasModule(model, node.Inputs[2], outFeatures) is { } gemmBias)
        {
            return gemmBias;
        }
        if (node.Outputs.Count > 0 && consumers.TryGetValue(node.Outputs[0], out var next))
        {
            foreach (var add in next.Where(n => n.OpType == "Add" && IsStandardDomain(n.Domain)))
            {
                foreach (var input in add.Inputs)
                {
                    if (input != node.Outputs[0] && BiasModule(model, input, outFeatures) is { } bias)
                    {
                        return bias;
                    }
                }
            }
        }
        return null;
    }

    private static string? BiasModule(OnnxModel model, string name, long outFeatures) =>
        model.FindInitializer(name) is { } bias && bias.Dims is [var n] && n == outFeatures
            && StripSuffix(bias.Name, ".bias") is { } module && IsModuleName(module)
            ? module
            : null;

    private static string? StripSuffix(string name, string suffix) =>
        name.EndsWith(suffix, StringComparison.Ordinal) && name.Length > suffix.Length ? name[..^suffix.Length] : null;

    /// <summary>A dotted framework name, not an exporter's generated one ("927", "onnx::MatMul_927").</summary>
    private static bool IsModuleName(string name) =>
        name.Contains('.', StringComparison.Ordinal) && !name.Contains("::", StringComparison.Ordinal);

    // "encoder.layer.3", "model.layers.0", "transformer.h.11", "blocks.2"
    [GeneratedRegex(@"(?:^|\.)(?:layer|layers|h|block|blocks)\.(?<index>\d+)(?=\.|$)", RegexOptions.CultureInvariant)]
    private static partial Regex LayerPattern();
}
