namespace Shears.Pruning.Scoring;

/// <summary>A weight to be scored is NaN: it has no place in the order of magnitudes.</summary>
public sealed class NaNWeightException : Exception
{
    public NaNWeightException(string tensorName, long index)
        : base($"tensor '{tensorName}' holds NaN at element {index}")
    {
        TensorName = tensorName;
        Index = index;
    }

    public string TensorName { get; }

    /// <summary>Row-major element index inside the whole tensor.</summary>
    public long Index { get; }
}
