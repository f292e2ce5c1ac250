namespace Shears.Engine;

/// <summary>
/// A block of rows of one tensor (or the whole tensor) held by a shard, in the selection group it belongs to
/// (one group for global scope, one per tensor otherwise).
/// </summary>
public sealed record ShardPiece(string Tensor, long RowStart, long RowCount, long RowElements, int Group)
{
    public long Elements => RowCount * RowElements;
}

/// <summary>Attention geometry, for the heads pattern.</summary>
public sealed record HeadGeometry(int Heads, int KvHeads, int HeadDim, int Hidden);

/// <summary>How a run's tensors lie on its shards: what the rounds need to know of the plan, and nothing of how it is hosted.</summary>
/// <param name="Prunable">Prunable tensors in ordinal name order (global position order).</param>
/// <param name="Shards">Per shard, its pieces in assignment order.</param>
/// <param name="GroupElements">Elements per selection group.</param>
/// <param name="LayerStages">Calibrated runs: the shards holding the model's layers, in the order the layers run.</param>
public sealed record RunLayout(
    IReadOnlyList<string> Prunable, IReadOnlyList<IReadOnlyList<ShardPiece>> Shards, IReadOnlyList<long> GroupElements, IReadOnlyList<int> LayerStages)
{
    /// <summary>Position of each prunable tensor in global order.</summary>
    public IReadOnlyDictionary<string, int> TensorOrder { get; } =
        Prunable.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
}
