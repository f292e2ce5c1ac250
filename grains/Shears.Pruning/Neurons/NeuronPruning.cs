using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Structured;

namespace Shears.Pruning.Neurons;

/// <summary>
/// One tensor's share of an MLP layer's neurons: neuron i is row i (<see cref="StructuredAxis.Rows"/>) or column i
/// (<see cref="StructuredAxis.Columns"/>) of the row-major [<paramref name="Rows"/>, <paramref name="Cols"/>] tensor
/// (a bias is [n, 1]).
/// </summary>
public sealed record NeuronMember(string Name, ReadOnlyMemory<byte> Bytes, TensorDType DType, long Rows, long Cols, StructuredAxis Axis)
{
    public long Neurons => Axis == StructuredAxis.Rows ? Rows : Cols;
}

/// <summary>
/// MLP neurons as coupled groups (Torch-Pruning's dependency groups): a neuron of a LLaMA-family MLP is row i of
/// gate_proj and up_proj and column i of down_proj; of a BERT FFN, output i of the FFN-in weight with its bias element
/// and input i of the FFN-out weight. Masking a neuron zeroes every element of its group, so the layer computes what the
/// layer without that neuron computes.
/// </summary>
public static class NeuronPruning
{
    /// <summary>
    /// One score per neuron: the sum over the group's members of the Ln norm of the neuron's row or column (masked
    /// elements as zero), accumulated in double, member by member in the order given.
    /// </summary>
    /// <param name="masks">Per member, its element mask (null: nothing masked).</param>
    public static double[] Scores(IReadOnlyList<NeuronMember> members, double p, IReadOnlyList<BitMask?>? masks = null)
    {
        long neurons = CheckMembers(members);
        if (masks is not null && masks.Count != members.Count)
            throw new ArgumentException($"{members.Count} members need {members.Count} masks, got {masks.Count}", nameof(masks));
        var scores = new double[neurons];
        for (int m = 0; m < members.Count; m++)
        {
            var t = members[m];
            var norms = StructuredPruning.Norms(t.Bytes.Span, t.DType, t.Rows, t.Cols, t.Axis, p, t.Name, masks?[m]);
            for (long i = 0; i < neurons; i++) scores[i] += norms[i];
        }
        return scores;
    }

    /// <summary>Sets every element of the given neurons in a member's mask.</summary>
    public static void Mask(NeuronMember member, BitMask mask, IEnumerable<int> neurons)
    {
        ArgumentNullException.ThrowIfNull(member);
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(neurons);
        if (mask.Length != member.Rows * member.Cols)
            throw new ArgumentException($"tensor '{member.Name}': the mask has {mask.Length} elements, the tensor {member.Rows * member.Cols}", nameof(mask));
        foreach (int n in neurons)
        {
            if (n < 0 || n >= member.Neurons)
                throw new ArgumentOutOfRangeException(nameof(neurons), n, $"tensor '{member.Name}': neuron index must be in [0, {member.Neurons})");
            StructuredPruning.MaskUnit(mask, member.Rows, member.Cols, member.Axis, n);
        }
    }

    /// <summary>The neurons whose row or column is wholly masked in <paramref name="mask"/>, ascending.</summary>
    public static int[] Pruned(NeuronMember member, BitMask mask)
    {
        ArgumentNullException.ThrowIfNull(member);
        ArgumentNullException.ThrowIfNull(mask);
        var pruned = new List<int>();
        for (int n = 0; n < member.Neurons; n++)
            if (StructuredPruning.IsUnitMasked(mask, member.Rows, member.Cols, member.Axis, n)) pruned.Add(n);
        return pruned.ToArray();
    }

    private static long CheckMembers(IReadOnlyList<NeuronMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        if (members.Count == 0) throw new ArgumentException("a neuron group needs at least one tensor", nameof(members));
        long neurons = members[0].Neurons;
        foreach (var m in members)
            if (m.Neurons != neurons)
                throw new ArgumentException(
                    $"tensor '{m.Name}' [{m.Rows}, {m.Cols}] has {m.Neurons} neurons along its {(m.Axis == StructuredAxis.Rows ? "rows" : "columns")}; '{members[0].Name}' has {neurons}",
                    nameof(members));
        return neurons;
    }
}
