namespace Shears.Engine.Rounds;

/// <summary>
/// One kind of round. The driver hands each round its context and knows nothing of how the round decides;
/// a new kind of round is a new class.
/// </summary>
public interface IRound
{
    Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token);
}

/// <param name="Round">1-based.</param>
/// <param name="Target">The round's cumulative target sparsity.</param>
/// <param name="Masked">Per shard, per piece: masked elements so far; the round updates it with what the shards report.</param>
/// <param name="GroupTargets">Progressive allocation: per selection group, the cumulative masked count to reach; null otherwise.</param>
/// <param name="Calibration">Calibrated methods: the token sequences fed through the model.</param>
public sealed record RoundContext(int Round, double Target, long[][] Masked, long[]? GroupTargets = null, IReadOnlyList<long[]>? Calibration = null);

/// <param name="Threshold">The global threshold key, when one global selection decided the round.</param>
/// <param name="SelectionBytes">Bytes of statistics the shards sent for the decision.</param>
public sealed record RoundOutcome(uint? Threshold, long SelectionBytes)
{
    /// <summary>--pattern layers: each layer's block influence as measured in the round, in layer order.</summary>
    public IReadOnlyList<double>? BlockInfluence { get; init; }

    public static readonly RoundOutcome Local = new(null, 0);
}
