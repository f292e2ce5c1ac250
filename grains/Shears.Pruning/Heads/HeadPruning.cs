using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Selection;
using Shears.Pruning.Structured;

namespace Shears.Pruning.Heads;

/// <summary>How an attention head's importance is scored; lower scores are pruned first.</summary>
public enum HeadScore
{
    /// <summary>L1 norm of the head's q_proj rows.</summary>
    QueryL1,

    /// <summary>
    /// L1 of the head's q_proj rows + L1 of its o_proj columns + (L1 of its KV head's k_proj and v_proj
    /// rows) / group size, so a KV head shared by g query heads is charged to each of them once over g.
    /// </summary>
    QkvoL1,
}

/// <summary>
/// The raw little-endian bytes of one LLaMA-style attention layer: q_proj [Heads·HeadDim, Hidden],
/// k_proj and v_proj [KvHeads·HeadDim, Hidden], o_proj [Hidden, Heads·HeadDim], all of <paramref name="DType"/>.
/// </summary>
/// <param name="Layer">Names the layer in error messages, e.g. <c>model.layers.3.self_attn</c>.</param>
public sealed record HeadWeights(
    ReadOnlyMemory<byte> Q, ReadOnlyMemory<byte> K, ReadOnlyMemory<byte> V, ReadOnlyMemory<byte> O,
    TensorDType DType, int Hidden, int Heads, int KvHeads, int HeadDim, string Layer = "self_attn")
{
    /// <summary>Query heads per KV head (1 without grouped-query attention).</summary>
    public int GroupSize => Heads / KvHeads;

    /// <summary>Checks every size and shape relation; throws <see cref="ArgumentException"/> naming what is wrong.</summary>
    public void Validate()
    {
        if (Hidden <= 0 || Heads <= 0 || KvHeads <= 0 || HeadDim <= 0)
            throw new ArgumentException(
                $"{Layer}: hidden ({Hidden}), heads ({Heads}), KV heads ({KvHeads}) and head dim ({HeadDim}) must all be positive");
        if (Heads % KvHeads != 0)
            throw new ArgumentException($"{Layer}: {Heads} query heads are not a multiple of {KvHeads} KV heads");
        int size = StructuredPruning.CheckDType(DType, $"{Layer}.q_proj");
        CheckBytes(Q, "q_proj", (long)Heads * HeadDim, Hidden, size);
        CheckBytes(K, "k_proj", (long)KvHeads * HeadDim, Hidden, size);
        CheckBytes(V, "v_proj", (long)KvHeads * HeadDim, Hidden, size);
        CheckBytes(O, "o_proj", Hidden, (long)Heads * HeadDim, size);
    }

    private void CheckBytes(ReadOnlyMemory<byte> bytes, string proj, long rows, long cols, int size)
    {
        long expected = checked(rows * cols * size);
        if (bytes.Length != expected)
            throw new ArgumentException(
                $"{Layer}.{proj}: expected [{rows}, {cols}] {DType} = {expected} bytes " +
                $"(heads {Heads}, KV heads {KvHeads}, head dim {HeadDim}, hidden {Hidden}), got {bytes.Length}");
    }
}

/// <summary>Element masks (set = pruned) for the four projections of one attention layer.</summary>
public sealed record HeadMasks(BitMask Q, BitMask K, BitMask V, BitMask O);

/// <summary>Attention-head pruning for LLaMA-style layers, grouped-query attention included.</summary>
/// <remarks>
/// Pruning query head h removes everything only it uses: its q_proj rows [h·d, (h+1)·d) and the o_proj
/// columns [h·d, (h+1)·d) that read its output. Under grouped-query attention (g = Heads / KvHeads, query
/// head h reads KV head h / g) the k_proj and v_proj rows of KV head j are masked only once every query
/// head of group j is pruned, since until then a surviving head still reads them; otherwise query heads
/// are pruned alone. Without GQA (g = 1) each pruned head takes its own k and v rows with it.
/// Counts are cumulative as everywhere in Shears: after a round with target s exactly
/// round_half_to_even(s × heads) heads are pruned, lowest score first, ties by lower head index.
/// </remarks>
public static class HeadPruning
{
    /// <summary>One score per query head, accumulated in double in a fixed order (see <see cref="HeadScore"/>).</summary>
    public static double[] Scores(HeadWeights w, HeadScore kind)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.Validate();
        if (kind is not (HeadScore.QueryL1 or HeadScore.QkvoL1))
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "expected QueryL1 or QkvoL1");
        int d = w.HeadDim;
        long qkRows = (long)w.Heads * d;

        var q = StructuredPruning.Norms(w.Q.Span, w.DType, qkRows, w.Hidden, StructuredAxis.Rows, 1, $"{w.Layer}.q_proj");
        var scores = SumGroups(q, w.Heads, d);
        if (kind == HeadScore.QueryL1) return scores;

        long kvRows = (long)w.KvHeads * d;
        var o = SumGroups(StructuredPruning.Norms(w.O.Span, w.DType, w.Hidden, qkRows, StructuredAxis.Columns, 1, $"{w.Layer}.o_proj"), w.Heads, d);
        var k = SumGroups(StructuredPruning.Norms(w.K.Span, w.DType, kvRows, w.Hidden, StructuredAxis.Rows, 1, $"{w.Layer}.k_proj"), w.KvHeads, d);
        var v = SumGroups(StructuredPruning.Norms(w.V.Span, w.DType, kvRows, w.Hidden, StructuredAxis.Rows, 1, $"{w.Layer}.v_proj"), w.KvHeads, d);
        int g = w.GroupSize;
        for (int h = 0; h < w.Heads; h++)
            scores[h] = scores[h] + o[h] + (k[h / g] + v[h / g]) / g;
        return scores;
    }

    /// <summary>
    /// Masks of the pruned query heads: their q_proj rows and o_proj columns, and the k_proj/v_proj rows
    /// of every KV head whose whole group is pruned. Duplicate head indices are ignored.
    /// </summary>
    public static HeadMasks MaskHeads(HeadWeights w, IReadOnlyCollection<int> prunedHeads)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(prunedHeads);
        w.Validate();
        var pruned = ToHeadSet(prunedHeads, w.Heads, nameof(prunedHeads));
        int d = w.HeadDim, hidden = w.Hidden, g = w.GroupSize;
        long qkRows = (long)w.Heads * d;
        var q = new BitMask(qkRows * hidden);
        var k = new BitMask((long)w.KvHeads * d * hidden);
        var v = new BitMask((long)w.KvHeads * d * hidden);
        var o = new BitMask(hidden * qkRows);

        foreach (int h in pruned)
        {
            q.SetRange((long)h * d * hidden, (long)d * hidden);
            for (long r = 0; r < hidden; r++) o.SetRange(r * qkRows + (long)h * d, d);
        }
        for (int j = 0; j < w.KvHeads; j++)
        {
            bool wholeGroup = true;
            for (int h = j * g; h < (j + 1) * g; h++) wholeGroup &= pruned.Contains(h);
            if (!wholeGroup) continue;
            k.SetRange((long)j * d * hidden, (long)d * hidden);
            v.SetRange((long)j * d * hidden, (long)d * hidden);
        }
        return new HeadMasks(q, k, v, o);
    }

    /// <summary>The heads to prune this round (<see cref="UnitSelection.SelectLowest"/> over the layer's heads).</summary>
    public static int[] SelectHeads(double[] scores, double cumulativeSparsity, IReadOnlyCollection<int> alreadyPruned) =>
        UnitSelection.SelectLowest(scores, cumulativeSparsity, alreadyPruned);

    /// <summary>Global head selection across layers (<see cref="UnitSelection.SelectLowestGlobal"/>); a layer may lose all its heads.</summary>
    public static (int Layer, int Head)[] SelectHeadsGlobal(
        IReadOnlyList<double[]> scoresPerLayer, double cumulativeSparsity,
        IReadOnlyCollection<(int Layer, int Head)> alreadyPruned) =>
        UnitSelection.SelectLowestGlobal(scoresPerLayer, cumulativeSparsity, alreadyPruned);

    private static double[] SumGroups(double[] rowNorms, int groups, int size)
    {
        var sums = new double[groups];
        for (int gi = 0; gi < groups; gi++)
            for (int i = gi * size; i < (gi + 1) * size; i++) sums[gi] += rowNorms[i];
        return sums;
    }

    private static HashSet<int> ToHeadSet(IReadOnlyCollection<int> heads, int count, string paramName)
    {
        var set = new HashSet<int>();
        foreach (int h in heads)
        {
            if (h < 0 || h >= count)
                throw new ArgumentOutOfRangeException(paramName, h, $"head index must be in [0, {count})");
            set.Add(h);
        }
        return set;
    }
}
