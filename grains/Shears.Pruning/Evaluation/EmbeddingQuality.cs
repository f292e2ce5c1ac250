using System.Numerics;

namespace Shears.Pruning.Evaluation;

/// <summary>How close the pruned model's sentence embeddings stay to the dense model's, sentence by sentence.</summary>
/// <param name="Mean">Mean cosine between the pruned and the dense embedding of the same sentence.</param>
/// <param name="Percentile5">5th percentile of those cosines (linear between closest ranks, numpy's default).</param>
/// <param name="Min">The worst sentence's cosine.</param>
public sealed record FidelityResult(double Mean, double Percentile5, double Min, int Count);

/// <summary>
/// Measures of an encoder's quality over sentence embeddings (float[][], one vector per sentence, the same
/// sentences in the same order for the dense and the pruned model). Similarity is cosine throughout; a zero vector
/// has cosine 0 with everything. Sums run in double, and no result depends on the number of threads.
/// </summary>
public static class EmbeddingQuality
{
    public const int DefaultNeighbours = 10;

    /// <summary>Cosine of the angle between <paramref name="a"/> and <paramref name="b"/>; 0 when either is zero.</summary>
    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException($"Vectors of {a.Length} and {b.Length} dimensions have no cosine.");
        }
        double dot = 0, aa = 0, bb = 0;
        for (var i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }
        return aa == 0 || bb == 0 ? 0 : dot / (Math.Sqrt(aa) * Math.Sqrt(bb));
    }

    /// <summary>Cosine between the pruned and the dense embedding of each sentence.</summary>
    public static double[] Cosines(IReadOnlyList<float[]> dense, IReadOnlyList<float[]> pruned)
    {
        CheckAligned(dense, pruned, nameof(pruned));
        return [.. Enumerable.Range(0, dense.Count).Select(i => Cosine(dense[i], pruned[i]))];
    }

    /// <summary>Fidelity: mean, 5th percentile and minimum of <see cref="Cosines"/>.</summary>
    public static FidelityResult Fidelity(IReadOnlyList<float[]> dense, IReadOnlyList<float[]> pruned)
    {
        var cosines = Cosines(dense, pruned);
        if (cosines.Length == 0)
        {
            throw new ArgumentException("Fidelity needs at least one sentence.", nameof(dense));
        }
        var sorted = cosines.Order().ToArray();
        return new FidelityResult(cosines.Average(), Percentile(sorted, 0.05), sorted[0], cosines.Length);
    }

    /// <summary>The <paramref name="p"/>-quantile of ascending <paramref name="sorted"/>, interpolating linearly at position p·(n − 1).</summary>
    public static double Percentile(IReadOnlyList<double> sorted, double p)
    {
        ArgumentNullException.ThrowIfNull(sorted);
        if (sorted.Count == 0)
        {
            throw new ArgumentException("A percentile of nothing is undefined.", nameof(sorted));
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(p, 0.0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(p, 1.0);
        var position = p * (sorted.Count - 1);
        var lower = (int)Math.Floor(position);
        var upper = Math.Min(lower + 1, sorted.Count - 1);
        return sorted[lower] + (position - lower) * (sorted[upper] - sorted[lower]);
    }

    /// <summary>
    /// Neighbour agreement@k: for each sentence, the fraction of its k nearest neighbours under the dense model
    /// (cosine, itself excluded) that are also among its k nearest under the pruned model; the mean over sentences.
    /// Equal similarities rank the lower index first.
    /// </summary>
    public static double NeighbourAgreement(IReadOnlyList<float[]> dense, IReadOnlyList<float[]> pruned, int k = DefaultNeighbours)
    {
        CheckAligned(dense, pruned, nameof(pruned));
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        if (dense.Count <= k)
        {
            throw new ArgumentException($"Neighbour agreement@{k} needs more than {k} sentences; got {dense.Count}.", nameof(dense));
        }
        return NeighbourAgreement(NearestNeighbours(dense, k), pruned, k);
    }

    /// <summary>
    /// <see cref="NeighbourAgreement(IReadOnlyList{float[]}, IReadOnlyList{float[]}, int)"/> with the dense model's
    /// neighbours already found (<see cref="NearestNeighbours"/> with the same k): a run measuring every round finds them once.
    /// </summary>
    public static double NeighbourAgreement(int[][] denseNeighbours, IReadOnlyList<float[]> pruned, int k)
    {
        ArgumentNullException.ThrowIfNull(denseNeighbours);
        ArgumentNullException.ThrowIfNull(pruned);
        if (denseNeighbours.Length != pruned.Count)
            throw new ArgumentException($"{denseNeighbours.Length} dense neighbour lists for {pruned.Count} pruned embeddings.", nameof(pruned));
        if (denseNeighbours.Any(n => n.Length != k))
            throw new ArgumentException($"the dense neighbour lists must hold {k} neighbours each.", nameof(denseNeighbours));
        var after = NearestNeighbours(pruned, k);
        double total = 0;
        for (var i = 0; i < denseNeighbours.Length; i++)
        {
            total += (double)denseNeighbours[i].Intersect(after[i]).Count() / k;
        }
        return total / denseNeighbours.Length;
    }

    /// <summary>
    /// The <paramref name="k"/> nearest neighbours of every vector among the others, by cosine, most similar first;
    /// equal similarities put the lower index first.
    /// </summary>
    public static int[][] NearestNeighbours(IReadOnlyList<float[]> vectors, int k)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        if (vectors.Count <= k)
        {
            throw new ArgumentException($"{k} neighbours need more than {k} vectors; got {vectors.Count}.", nameof(vectors));
        }
        var unit = UnitRows(vectors, nameof(vectors));
        var result = new int[unit.Length][];
        Parallel.For(0, unit.Length, i =>
        {
            // The k best so far, best first; insertion keeps them ordered by (similarity desc, index asc).
            var best = new int[k];
            var scores = new double[k];
            var filled = 0;
            for (var j = 0; j < unit.Length; j++)
            {
                if (j == i)
                {
                    continue;
                }
                var s = Dot(unit[i], unit[j]);
                if (filled == k && s <= scores[k - 1])
                {
                    continue; // not better than the k-th; an equal score loses to the lower index already there
                }
                var at = filled < k ? filled++ : k - 1;
                while (at > 0 && scores[at - 1] < s)
                {
                    scores[at] = scores[at - 1];
                    best[at] = best[at - 1];
                    at--;
                }
                scores[at] = s;
                best[at] = j;
            }
            result[i] = best;
        });
        return result;
    }

    /// <summary>Each vector divided by its norm, in double (a zero vector stays zero).</summary>
    internal static double[][] UnitRows(IReadOnlyList<float[]> vectors, string parameter)
    {
        var width = vectors.Count == 0 ? 0 : vectors[0]?.Length ?? 0;
        var rows = new double[vectors.Count][];
        for (var i = 0; i < vectors.Count; i++)
        {
            var v = vectors[i] ?? throw new ArgumentNullException(parameter, $"Vector {i} is null.");
            if (v.Length != width)
            {
                throw new ArgumentException($"Vector {i} has {v.Length} dimensions; vector 0 has {width}.", parameter);
            }
            double norm = 0;
            foreach (var x in v)
            {
                if (!float.IsFinite(x))
                {
                    throw new ArgumentException($"Vector {i} holds {x}; embeddings must be finite.", parameter);
                }
                norm += (double)x * x;
            }
            var scale = norm == 0 ? 0 : 1 / Math.Sqrt(norm);
            rows[i] = [.. v.Select(x => x * scale)];
        }
        return rows;
    }

    internal static double Dot(double[] a, double[] b)
    {
        var sum = Vector<double>.Zero;
        var i = 0;
        for (; i <= a.Length - Vector<double>.Count; i += Vector<double>.Count)
        {
            sum += new Vector<double>(a, i) * new Vector<double>(b, i);
        }
        var dot = Vector.Sum(sum);
        for (; i < a.Length; i++)
        {
            dot += a[i] * b[i];
        }
        return dot;
    }

    internal static void CheckAligned(IReadOnlyList<float[]> first, IReadOnlyList<float[]> second, string parameter)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        if (first.Count != second.Count)
        {
            throw new ArgumentException($"The embedding sets must hold the same sentences in the same order; they hold {first.Count} and {second.Count}.", parameter);
        }
    }
}
