using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
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
                    // Groups of input features: along a row of a [out, in] weight, down a column of an encoder's [in, out].
                    piece.Mask = Manifest.OutputColumns.Contains(piece.Entry.Name)
                        ? new NmPattern(n, m).MagnitudeMaskOfInputRows(piece.Bytes, piece.Entry.DType, piece.Rows, piece.Cols, piece.Entry.Name, piece.Mask)
                        : new NmPattern(n, m).MagnitudeMask(piece.Bytes, piece.Entry.DType, piece.Rows, piece.Cols, piece.Entry.Name, piece.Mask);
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

    /// <summary>
    /// One attention layer's projections. LLaMA stores them [out, in] (q/k/v [heads·d, hidden], o [hidden, heads·d]); an
    /// ONNX encoder's MatMul weights are stored [in, out], the transpose: heads are read and masked in LLaMA's order and
    /// the masks turned back. An encoder layer's heads follow from its query width (a layer whose heads were removed has fewer).
    /// </summary>
    private sealed record AttentionLayer(LoadedPiece Q, LoadedPiece K, LoadedPiece V, LoadedPiece O, bool StoredInOut, int Heads, int KvHeads);

    private HeadWeights Weights(AttentionLayer layer)
    {
        byte[] Bytes(LoadedPiece p) => layer.StoredInOut ? Transposed(p.Writable(), p.Rows, p.Cols, p.Entry.DType.ElementSize()) : p.Writable();
        return new(Bytes(layer.Q), Bytes(layer.K), Bytes(layer.V), Bytes(layer.O), layer.Q.Entry.DType, Layout.Hidden, layer.Heads, layer.KvHeads, Layout.HeadDim,
            layer.Q.Entry.Name);
    }

    private double[] Scores(AttentionLayer layer) => HeadPruning.Scores(Weights(layer), Recipe.HeadScore);

    /// <summary>Layer-wise: each layer keeps its own share of heads.</summary>
    private void ApplyHeads(double sparsity)
    {
        foreach (var layer in AttentionLayers())
        {
            var already = PrunedHeads(layer);
            var scores = Scores(layer);
            int[] chosen;
            if (Recipe.BalancedHeadGroups && layer.KvHeads < layer.Heads)
            {
                // Each key/value group on its own: its query heads' scores, its share of the target.
                int group = layer.Heads / layer.KvHeads;
                chosen = Enumerable.Range(0, layer.KvHeads).SelectMany(g => HeadPruning.SelectHeads(scores[(g * group)..((g + 1) * group)], sparsity,
                    already.Where(h => h / group == g).Select(h => h - g * group).ToArray()).Select(h => h + g * group)).ToArray();
            }
            else chosen = HeadPruning.SelectHeads(scores, sparsity, already);
            MaskHeads(layer, chosen.Union(already).ToArray());
        }
    }

    private void MaskHeads(AttentionLayer layer, int[] heads)
    {
        var masks = HeadPruning.MaskHeads(Weights(layer), heads);
        // Masks come [out, in]: q/k/v [width, hidden], o [hidden, width]; stored [in, out] they are the transposes.
        BitMask Stored(BitMask mask, LoadedPiece p) => layer.StoredInOut ? Transposed(mask, p.Cols, p.Rows) : mask;
        Or(layer.Q.Mask, Stored(masks.Q, layer.Q));
        Or(layer.K.Mask, Stored(masks.K, layer.K));
        Or(layer.V.Mask, Stored(masks.V, layer.V));
        Or(layer.O.Mask, Stored(masks.O, layer.O));
    }

    /// <summary>The scores of the shard's structured units (attention heads, MLP neurons) per layer, and those pruned already.</summary>
    public UnitScoreSet UnitScores()
    {
        if (Recipe.Pattern == PrunePattern.Neurons) return NeuronScores();
        var layers = AttentionLayers().ToArray();
        return new UnitScoreSet(
            layers.Select(l => l.Q.Entry.Name).ToArray(),
            layers.Select(Scores).ToArray(),
            layers.Select(PrunedHeads).ToArray());
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
            MaskHeads(layer, heads.Union(PrunedHeads(layer)).ToArray());
        }
        return MaskedPerPiece;
    }

    /// <summary>The query heads whose every q weight is masked already.</summary>
    private int[] PrunedHeads(AttentionLayer layer)
    {
        var q = layer.Q;
        var mask = layer.StoredInOut ? Transposed(q.Mask, q.Rows, q.Cols) : q.Mask;
        var result = new List<int>();
        long headElements = (long)Layout.HeadDim * Layout.Hidden;
        for (int h = 0; h < layer.Heads; h++)
        {
            bool all = true;
            for (long e = h * headElements; e < (h + 1) * headElements && all; e++) all = mask[e];
            if (all) result.Add(h);
        }
        return result.ToArray();
    }

    /// <summary>
    /// The shard's attention layers: LLaMA's q/k/v/o_proj by name, or an ONNX encoder's query, key, value and attention
    /// output weights by their roles in the manifest. Every projection of a layer must lie here, whole.
    /// </summary>
    private IEnumerable<AttentionLayer> AttentionLayers()
    {
        if (Manifest.Format == CheckpointFormat.Onnx)
        {
            foreach (var q in Pieces.Where(p => Manifest.LayerRoles.TryGetValue(p.Entry.Name, out var r) && r.Role == "query"))
            {
                int index = Manifest.LayerRoles[q.Entry.Name].Layer;
                LoadedPiece Role(string role) =>
                    Pieces.FirstOrDefault(p => Manifest.LayerRoles.TryGetValue(p.Entry.Name, out var r) && r == (index, role))
                    ?? throw new InvalidOperationException($"--pattern heads: the {role} weight of encoder layer {index} must be pruned with '{q.Entry.Name}'");
                int heads = checked((int)(q.Cols / Layout.HeadDim));
                if (q.Rows != Layout.Hidden || heads * (long)Layout.HeadDim != q.Cols)
                    throw new InvalidOperationException($"--pattern heads: the query weight '{q.Entry.Name}' is [{q.Rows}, {q.Cols}]; heads of {Layout.HeadDim} over a hidden size of {Layout.Hidden} need [{Layout.Hidden}, a multiple of {Layout.HeadDim}]");
                yield return new AttentionLayer(q, Role("key"), Role("value"), Role("attention.output"), StoredInOut: true, heads, heads);
            }
            yield break;
        }
        foreach (var q in Pieces.Where(p => p.Entry.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)))
        {
            string prefix = q.Entry.Name[..^"q_proj.weight".Length];
            LoadedPiece Find(string suffix) => Pieces.FirstOrDefault(p => p.Entry.Name == prefix + suffix)
                ?? throw new InvalidOperationException($"--pattern heads: tensor '{prefix + suffix}' must be pruned with '{q.Entry.Name}'");
            yield return new AttentionLayer(q, Find("k_proj.weight"), Find("v_proj.weight"), Find("o_proj.weight"), StoredInOut: false, Layout.Heads, Layout.KvHeads);
        }
    }

    /// <summary>A row-major [rows, cols] matrix of <paramref name="elementSize"/>-byte elements, transposed to [cols, rows].</summary>
    private static byte[] Transposed(byte[] bytes, long rows, long cols, int elementSize)
    {
        var result = new byte[bytes.Length];
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++)
                Buffer.BlockCopy(bytes, (int)((r * cols + c) * elementSize), result, (int)((c * rows + r) * elementSize), elementSize);
        return result;
    }

    private static BitMask Transposed(BitMask mask, long rows, long cols) => mask.Transposed(rows, cols);

    private static void Or(BitMask target, BitMask source)
    {
        if (target.Length != source.Length) throw new InvalidOperationException("mask length mismatch");
        for (long i = 0; i < source.Length; i++) if (source[i]) target.Set(i);
    }
}
