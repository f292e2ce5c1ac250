using System.Text.RegularExpressions;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;

namespace Shears.Pruning.Structured;

/// <summary>
/// Whole layers taken out of a BERT-family ONNX encoder's graph. A layer runs from its input X (what its query MatMul
/// reads) to its output Y (its output LayerNorm's last Add): the layer's nodes are those downstream of X and upstream of Y;
/// they go, an Identity node passes X on as Y (so the next layer, or the graph's output, reads the layer's input), and
/// every node and initializer no output needs any more goes with them. The later layers' initializers named
/// encoder.layer.N.… are renumbered, so the output's layers are numbered 0, 1, … again.
/// </summary>
public static partial class EncoderLayerRemoval
{
    [GeneratedRegex(@"^encoder\.layer\.(\d+)\.(.+)$")]
    private static partial Regex LayerName();

    public static OnnxGraphEdit Plan(OnnxModel model, BertWeightNames names, IReadOnlyCollection<int> removed)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(removed);
        if (removed.Count == 0) return OnnxGraphEdit.None;
        var nodes = model.Nodes;
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < nodes.Count; i++)
        {
            foreach (string output in nodes[i].Outputs) producer[output] = i;
            foreach (string input in nodes[i].Inputs)
            {
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = [];
                list.Add(i);
            }
        }

        var dropped = new HashSet<int>();
        var bypasses = new List<(int Before, string Input, string Output, string Name)>();
        foreach (int l in removed.Order())
        {
            var layer = names.Layers[l];
            int query = Find(model, nodes, n => n.OpType == "MatMul" && n.Inputs.Count == 2 && n.Inputs[1] == layer.Query, $"the MatMul that reads '{layer.Query}'");
            int last = Find(model, nodes, n => n.OpType == "Add" && n.Inputs.Contains(layer.OutputNormBias) && n.Outputs.Count == 1, $"the Add that reads '{layer.OutputNormBias}'");
            string x = nodes[query].Inputs[0], y = nodes[last].Outputs[0];

            var downstream = Walk([.. consumers.GetValueOrDefault(x) ?? []], i => nodes[i].Outputs.SelectMany(o => consumers.GetValueOrDefault(o) ?? []));
            var upstream = Walk([last], i => nodes[i].Inputs.Where(producer.ContainsKey).Select(n => producer[n]));
            var span = downstream.Intersect(upstream).ToHashSet();
            if (!span.Contains(query) || span.Contains(producer.GetValueOrDefault(x, -1)))
                throw new CheckpointFormatException(model.FilePath, layer.Query, $"encoder layer {l} does not run from its query's input to its output LayerNorm; it cannot be taken out of the graph");
            dropped.UnionWith(span);
            bypasses.Add((span.Min(), x, y, $"shears_removed_encoder_layer_{l}"));
        }

        // What the graph's outputs still need, walking back over the kept nodes and the bypasses.
        var needed = new HashSet<string>(model.GraphOutputs, StringComparer.Ordinal);
        var live = new HashSet<int>();
        var bypassAt = bypasses.ToLookup(b => b.Before);
        for (int i = nodes.Count - 1; i >= 0; i--)
        {
            if (!dropped.Contains(i) && nodes[i].Outputs.Any(needed.Contains))
            {
                live.Add(i);
                needed.UnionWith(nodes[i].Inputs.Where(n => n.Length > 0));
            }
            foreach (var b in bypassAt[i].Reverse())
                if (needed.Contains(b.Output)) needed.Add(b.Input);
        }
        var deadNodes = Enumerable.Range(0, nodes.Count).Where(i => !live.Contains(i)).ToHashSet();
        var read = live.SelectMany(i => nodes[i].Inputs).ToHashSet(StringComparer.Ordinal);
        var deadInitializers = deadNodes.SelectMany(i => nodes[i].Inputs).Where(n => model.FindInitializer(n) is not null && !read.Contains(n)).ToHashSet(StringComparer.Ordinal);

        var renames = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var init in model.Initializers)
        {
            if (deadInitializers.Contains(init.Name) || LayerName().Match(init.Name) is not { Success: true } m) continue;
            int n = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (removed.Contains(n)) throw new CheckpointFormatException(model.FilePath, init.Name, $"encoder layer {n} is removed, but a node outside it reads this initializer");
            int renumbered = n - removed.Count(r => r < n);
            if (renumbered != n) renames[init.Name] = $"encoder.layer.{renumbered}.{m.Groups[2].Value}";
        }
        foreach (string input in model.GraphInputs.Where(i => renames.ContainsKey(i) || deadInitializers.Contains(i)))
            throw new CheckpointFormatException(model.FilePath, input, "the graph lists this initializer among its inputs; a layer removal cannot rename or drop it");
        return new OnnxGraphEdit(deadNodes, bypasses, renames, deadInitializers);
    }

    private static int Find(OnnxModel model, IReadOnlyList<OnnxNode> nodes, Func<OnnxNode, bool> match, string what)
    {
        for (int i = 0; i < nodes.Count; i++) if (match(nodes[i])) return i;
        throw new CheckpointFormatException(model.FilePath, null, $"cannot find {what} in the graph");
    }

    private static HashSet<int> Walk(IEnumerable<int> start, Func<int, IEnumerable<int>> next)
    {
        var seen = new HashSet<int>();
        var stack = new Stack<int>(start);
        while (stack.Count > 0)
        {
            int i = stack.Pop();
            if (!seen.Add(i)) continue;
            foreach (int j in next(i)) stack.Push(j);
        }
        return seen;
    }
}
