using Shears.Pruning.Calibration;
using Shears.Pruning.Heads;
using Shears.Pruning.Masks;
using Shears.Pruning.Selection;
using Shears.Pruning.Structured;

namespace Shears.Engine.Shards;

// Rounds decided inside the shard, and the attention heads it holds.
public sealed partial class ShardSelection
{
    /// <summary>Layer-local units (rows, columns, heads per layer, N:M) and groups lying on one piece; returns masked elements per piece.</summary>
    public long[] ApplyLocal(LocalDecision decision)
    {
        // Kept statistics stay: each entry checks its piece's mask count, and masks only grow, so the pieces decided
        // here fall out of them while pieces of split groups, applied next, keep theirs.
        if (Recipe.Pattern == PrunePattern.Heads)
        {
            ApplyHeads(decision.Sparsity);
            return MaskedPerPiece;
        }
        for (int i = 0; i < Pieces.Length; i++)
        {
            if (decision.TargetMasked[i] < 0) continue;
            var piece = Pieces[i];
            switch (Recipe.Pattern)
            {
                case PrunePattern.Unstructured:
                    long more = decision.TargetMasked[i] - piece.Mask.CountSet();
                    int index = i;
                    if (more > 0) LocalSelection.MaskSmallest(piece.FillKeys, piece.Mask, more, (level, prefix, into) => KeptOrCounted(index, level, prefix, into),
                        (threshold, ties, equal) => piece.ApplyThreshold(threshold, ties, equal));
                    break;
                case PrunePattern.NOfM:
                    var (n, m) = Recipe.NOfM;
                    piece.Mask = new NmPattern(n, m).MagnitudeMask(piece.Bytes, piece.Entry.DType, piece.Rows, piece.Cols, piece.Entry.Name, piece.Mask);
                    break;
                case PrunePattern.Rows or PrunePattern.Columns:
                    // rows = output neurons, columns = input features, whatever the storage order.
                    bool outputsAreColumns = Manifest.OutputColumns.Contains(piece.Entry.Name);
                    var axis = (Recipe.Pattern == PrunePattern.Rows) != outputsAreColumns ? StructuredAxis.Rows : StructuredAxis.Columns;
                    var norms = StructuredPruning.Norms(ShardMath.Masked(piece), piece.Entry.DType, piece.Rows, piece.Cols, axis, Recipe.Norm, piece.Entry.Name);
                    StructuredPruning.MaskSmallest(norms, piece.Mask, piece.Rows, piece.Cols, axis, decision.Sparsity);
                    break;
                default:
                    throw new NotSupportedException($"--pattern {Recipe.Pattern} is not decided by shards");
            }
        }
        CheckSources();
        return MaskedPerPiece;
    }

    private HeadGeometry Layout => _load.Heads ?? throw new InvalidOperationException("--pattern heads needs the attention layout from config.json");

    private HeadWeights Weights((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer) =>
        new(layer.Q.Writable(), layer.K.Writable(), layer.V.Writable(), layer.O.Writable(), layer.Q.Entry.DType, Layout.Hidden, Layout.Heads, Layout.KvHeads, Layout.HeadDim);

    private double[] Scores((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer) => HeadPruning.Scores(Weights(layer), Recipe.HeadScore);

    /// <summary>Layer-wise: each layer keeps its own share of heads.</summary>
    private void ApplyHeads(double sparsity)
    {
        foreach (var layer in AttentionLayers())
        {
            var already = PrunedHeads(layer.Q, Layout);
            var scores = Scores(layer);
            int[] chosen;
            if (Recipe.BalancedHeadGroups && Layout.KvHeads < Layout.Heads)
            {
                // Each key/value group on its own: its query heads' scores, its share of the target.
                int group = Layout.Heads / Layout.KvHeads;
                chosen = Enumerable.Range(0, Layout.KvHeads).SelectMany(g => HeadPruning.SelectHeads(scores[(g * group)..((g + 1) * group)], sparsity,
                    already.Where(h => h / group == g).Select(h => h - g * group).ToArray()).Select(h => h + g * group)).ToArray();
            }
            else chosen = HeadPruning.SelectHeads(scores, sparsity, already);
            MaskHeads(layer, chosen.Union(already).ToArray());
        }
    }

    private void MaskHeads((LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O) layer, int[] heads)
    {
        var masks = HeadPruning.MaskHeads(Weights(layer), heads);
        Or(layer.Q.Mask, masks.Q);
        Or(layer.K.Mask, masks.K);
        Or(layer.V.Mask, masks.V);
        Or(layer.O.Mask, masks.O);
    }

    /// <summary>The scores of the shard's structured units (attention heads, MLP neurons) per layer, and those pruned already.</summary>
    public UnitScoreSet UnitScores()
    {
        if (Recipe.Pattern == PrunePattern.Neurons) return NeuronScores();
        var layers = AttentionLayers().ToArray();
        return new UnitScoreSet(
            layers.Select(l => l.Q.Entry.Name).ToArray(),
            layers.Select(Scores).ToArray(),
            layers.Select(l => PrunedHeads(l.Q, Layout)).ToArray());
    }

    /// <summary>Masks the chosen units (heads: q/o, and k/v once a KV group is empty; neurons: their whole group); returns masked elements per piece.</summary>
    public long[] PruneUnits(UnitChoice choice)
    {
        ForgetStatistics();
        if (Recipe.Pattern == PrunePattern.Layers)
        {
            // The shard holds one layer: chosen, every element of every matrix goes (the residual stream passes on).
            if (choice.Units.Count > 0) foreach (var piece in Pieces) piece.Mask.SetRange(0, piece.Mask.Length);
            CheckSources();
            return MaskedPerPiece;
        }
        if (Recipe.Pattern == PrunePattern.Neurons)
        {
            PruneNeurons(choice);
            CheckSources();
            return MaskedPerPiece;
        }
        foreach (var layer in AttentionLayers())
        {
            if (!choice.Units.TryGetValue(layer.Q.Entry.Name, out var heads) || heads.Length == 0) continue;
            MaskHeads(layer, heads.Union(PrunedHeads(layer.Q, Layout)).ToArray());
        }
        return MaskedPerPiece;
    }

    private static int[] PrunedHeads(LoadedPiece q, HeadGeometry layout)
    {
        var result = new List<int>();
        long headElements = (long)layout.HeadDim * q.Cols;
        for (int h = 0; h < layout.Heads; h++)
        {
            bool all = true;
            for (long e = h * headElements; e < (h + 1) * headElements && all; e++) all = q.Mask[e];
            if (all) result.Add(h);
        }
        return result.ToArray();
    }

    private IEnumerable<(LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O)> AttentionLayers()
    {
        foreach (var q in Pieces.Where(p => p.Entry.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)))
        {
            string prefix = q.Entry.Name[..^"q_proj.weight".Length];
            LoadedPiece Find(string suffix) => Pieces.FirstOrDefault(p => p.Entry.Name == prefix + suffix)
                ?? throw new InvalidOperationException($"--pattern heads: tensor '{prefix + suffix}' must be pruned with '{q.Entry.Name}'");
            yield return (q, Find("k_proj.weight"), Find("v_proj.weight"), Find("o_proj.weight"));
        }
    }

    private static void Or(BitMask target, BitMask source)
    {
        if (target.Length != source.Length) throw new InvalidOperationException("mask length mismatch");
        for (long i = 0; i < source.Length; i++) if (source[i]) target.Set(i);
    }
}
