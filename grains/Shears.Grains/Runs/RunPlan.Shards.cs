using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Grains.Runs;

// Sharded plans: a run that only selects cuts its tensors into shards by rows (--shard-elements or --shards).
public static partial class RunPlanner
{
    private static RunPlan ShardedPlan(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable)
    {
        bool splittable = spec.Pattern is RunOptions.Patterns.Unstructured;
        bool globalGroups = spec.Scope == RunOptions.Scopes.Global;
        var shards = new List<(List<TensorPiece> Pieces, long Elements)>();
        var groupElements = new List<long>();
        if (globalGroups) groupElements.Add(prunable.Sum(t => t.ElementCount));

        // One shard per layer; a layer larger than the limit spreads over several shards, and a
        // matrix larger than the limit is split into row blocks (never for row/column/head patterns,
        // which rank whole rows, columns or heads of a tensor).
        int tensorIndex = 0;
        // A neuron's or head's tensors stay on one shard (an ONNX encoder's weights have no layer in their names: their roles give it).
        string Layer(string name) => spec.Pattern == RunOptions.Patterns.Neurons ? Shears.Engine.Shards.ShardSelection.NeuronLayerOf(manifest, name) ?? LayerOf(name)
            : manifest.Format == CheckpointFormat.Onnx && manifest.LayerRoles.TryGetValue(name, out var role) ? $"encoder.layer.{role.Layer}"
            : LayerOf(name);
        if (spec.Shards is { } exact)
        {
            var ordered = prunable.GroupBy(t => Layer(t.Name)).SelectMany(g => g).ToList();
            foreach (var t in ordered) if (!globalGroups) groupElements.Add(t.ElementCount);
            shards = ExactShards(manifest, spec, ordered, exact, globalGroups);
        }
        else foreach (var layer in prunable.GroupBy(t => Layer(t.Name)))
        {
            var current = new List<TensorPiece>();
            long currentElements = 0;
            foreach (var t in layer)
            {
                int group = globalGroups ? 0 : tensorIndex;
                if (!globalGroups) groupElements.Add(t.ElementCount);
                tensorIndex++;
                long rows = t.Shape[0];
                long rowElements = t.ElementCount / rows;
                long maxRows = splittable ? Math.Max(1, spec.ShardElements / rowElements) : rows;
                // A quantized tensor's zero points pack several rows into one word: row blocks start on a word.
                // ONNX weights are stored [in, out] and quantized along their rows: a column's groups stay on one shard.
                if (spec.Quantize is not null && manifest.Format == CheckpointFormat.Onnx) maxRows = rows;
                if (spec.Quantize is not null && maxRows < rows)
                    maxRows = Math.Max(QuantizedLayout.RowAlignment, maxRows / QuantizedLayout.RowAlignment * QuantizedLayout.RowAlignment);
                for (long start = 0; start < rows; start += maxRows)
                {
                    long count = Math.Min(maxRows, rows - start);
                    long elements = count * rowElements;
                    if (current.Count > 0 && currentElements + elements > spec.ShardElements && splittable)
                    {
                        shards.Add((current, currentElements));
                        current = [];
                        currentElements = 0;
                    }
                    current.Add(new TensorPiece { Tensor = t.Name, RowStart = start, RowCount = count, RowElements = rowElements, Group = group });
                    currentElements += elements;
                }
            }
            if (current.Count > 0) shards.Add((current, currentElements));
        }

        var copies = SpreadCopies(manifest, prunable.Select(t => t.Name).ToHashSet(StringComparer.Ordinal), shards.Count);

        return new RunPlan
        {
            Prunable = prunable.Select(t => t.Name).ToArray(),
            Shards = shards.Select((s, i) => new ShardPlan { Index = i, Pieces = s.Pieces, CopyTensors = copies[i] }).ToArray(),
            GroupElements = groupElements.ToArray(),
            PrunableWeights = prunable.Sum(t => t.ElementCount),
            Heads = spec.Pattern == RunOptions.Patterns.Heads ? ReadHeadLayout(manifest) : null,
        };
    }

    /// <summary>
    /// --shards N: the prunable tensors, in the plan's order, cut into exactly N shards of nearly equal size. The i-th cut
    /// is the allowed place nearest i/N of the weights (a row boundary; with --quantize a boundary of
    /// <see cref="QuantizedLayout.RowAlignment"/> rows, for ONNX a tensor boundary); a shard may hold the end of one
    /// tensor and the start of the next, even across layers.
    /// </summary>
    private static List<(List<TensorPiece> Pieces, long Elements)> ExactShards(
        CheckpointManifest manifest, RunSpec spec, List<TensorEntry> tensors, int count, bool globalGroups)
    {
        long RowsPerStep(TensorEntry t) => spec.Quantize is null ? 1
            : manifest.Format == CheckpointFormat.Onnx ? t.Shape[0] : QuantizedLayout.RowAlignment;
        var starts = new long[tensors.Count + 1];
        for (int i = 0; i < tensors.Count; i++) starts[i + 1] = starts[i] + tensors[i].ElementCount;
        long total = starts[^1];

        // The allowed cut nearest to position p (ties to the lower), and the first allowed cut after p.
        long Nearest(long p)
        {
            int i = Array.BinarySearch(starts, p);
            if (i >= 0) return p;
            i = ~i - 1;
            var t = tensors[i];
            long step = RowsPerStep(t) * (t.ElementCount / t.Shape[0]);
            long lower = starts[i] + (p - starts[i]) / step * step;
            long upper = Math.Min(starts[i + 1], lower + step);
            return p - lower <= upper - p ? lower : upper;
        }
        long After(long p)
        {
            int i = Array.BinarySearch(starts, p);
            i = i >= 0 ? i : ~i - 1;
            if (i >= tensors.Count) return total + 1;
            var t = tensors[i];
            long step = RowsPerStep(t) * (t.ElementCount / t.Shape[0]);
            return Math.Min(starts[i + 1], starts[i] + ((p - starts[i]) / step + 1) * step);
        }

        var cuts = new long[count + 1];
        cuts[count] = total;
        for (int k = 1; k < count; k++)
        {
            long ideal = (long)Math.Round((double)total * k / count, MidpointRounding.ToEven);
            long cut = Nearest(ideal);
            if (cut <= cuts[k - 1]) cut = After(cuts[k - 1]);
            if (cut >= total)
                throw new RunRejectedException(
                    $"--shards {count}: the {tensors.Count} prunable tensors ({total} weights) cannot be cut into {count} non-empty shards " +
                    $"at {(spec.Quantize is null ? "row" : manifest.Format == CheckpointFormat.Onnx ? "tensor" : $"{QuantizedLayout.RowAlignment}-row")} boundaries: give fewer");
            cuts[k] = cut;
        }

        var shards = new List<(List<TensorPiece> Pieces, long Elements)>(count);
        int tensor = 0;
        for (int k = 0; k < count; k++)
        {
            var pieces = new List<TensorPiece>();
            for (long at = cuts[k]; at < cuts[k + 1];)
            {
                while (starts[tensor + 1] <= at) tensor++;
                var t = tensors[tensor];
                long rowElements = t.ElementCount / t.Shape[0];
                long end = Math.Min(cuts[k + 1], starts[tensor + 1]);
                pieces.Add(new TensorPiece
                {
                    Tensor = t.Name, RowStart = (at - starts[tensor]) / rowElements, RowCount = (end - at) / rowElements,
                    RowElements = rowElements, Group = globalGroups ? 0 : tensor,
                });
                at = end;
            }
            shards.Add((pieces, cuts[k + 1] - cuts[k]));
        }
        return shards;
    }
}
