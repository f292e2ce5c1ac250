namespace Shears.Pruning.Allocation;

/// <summary>A layer's outliers: how many of its scores exceed M times the mean of them all.</summary>
public readonly record struct OutlierCount(long Outliers, long Elements)
{
    /// <summary>D = outliers / elements (0 for an empty layer).</summary>
    public double Ratio => Elements == 0 ? 0 : (double)Outliers / Elements;
}

/// <summary>
/// OWL's layer outlier ratio (Yin et al. 2024): over every Wanda score |W_ij|·‖X_j‖₂ of every weight of the layer
/// together, the share strictly greater than <c>threshold</c> × their mean. The mean is summed in double; an infinite
/// score makes the mean infinite and then nothing counts.
/// </summary>
public static class LayerOutliers
{
    public static OutlierCount Count(IReadOnlyList<float[]> scores, double threshold)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (!(threshold > 0) || double.IsInfinity(threshold))
            throw new ArgumentOutOfRangeException(nameof(threshold), threshold, $"--owl-threshold must be a positive number, got {threshold}");
        double sum = 0;
        long elements = 0;
        foreach (var s in scores)
        {
            foreach (float v in s) sum += v;
            elements += s.Length;
        }
        if (elements == 0) return new OutlierCount(0, 0);
        double limit = threshold * (sum / elements);
        long outliers = 0;
        foreach (var s in scores)
            foreach (float v in s)
                if (v > limit) outliers++;
        return new OutlierCount(outliers, elements);
    }
}
