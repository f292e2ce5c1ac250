namespace Shears.Pruning.Evaluation;

/// <summary>Retrieval over aligned lists: the share of queries whose match ranks first, and the mean reciprocal rank of the match.</summary>
public sealed record RetrievalResult(double Top1, double Mrr, int Count);

/// <summary>
/// Paraphrase retrieval of a pruned encoder, two ways. <see cref="SameModel"/>: queries and corpus both embedded
/// by the pruned model (a fresh index). <see cref="DenseCorpus"/>: pruned queries against the corpus the dense
/// model embedded (an index built before pruning, which the pruned model must still hit).
/// </summary>
public sealed record ParaphraseRetrievalResult(RetrievalResult SameModel, RetrievalResult DenseCorpus);

/// <summary>
/// Paraphrase retrieval between two aligned lists of sentence embeddings: query i's correct match is corpus entry
/// i (e.g. a verse in two translations). The corpus is ranked by cosine; equal scores rank the lower index first,
/// so the rank of the match is 1 + (entries scoring higher) + (entries before it scoring the same).
/// </summary>
public static class ParaphraseRetrieval
{
    /// <summary>Top-1 accuracy and MRR of <paramref name="queries"/> against <paramref name="corpus"/>.</summary>
    public static RetrievalResult Measure(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> corpus)
    {
        var ranks = Ranks(queries, corpus);
        return new RetrievalResult(ranks.Average(r => r == 1 ? 1.0 : 0.0), ranks.Average(r => 1.0 / r), ranks.Length);
    }

    /// <summary>Both variants for a pruned model: its own corpus, and the dense model's.</summary>
    public static ParaphraseRetrievalResult Measure(IReadOnlyList<float[]> prunedQueries, IReadOnlyList<float[]> prunedCorpus, IReadOnlyList<float[]> denseCorpus) =>
        new(Measure(prunedQueries, prunedCorpus), Measure(prunedQueries, denseCorpus));

    /// <summary>The 1-based rank of corpus entry i among all corpus entries for query i.</summary>
    public static int[] Ranks(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> corpus)
    {
        EmbeddingQuality.CheckAligned(queries, corpus, nameof(corpus));
        if (queries.Count == 0)
        {
            throw new ArgumentException("Retrieval needs at least one query.", nameof(queries));
        }
        var q = EmbeddingQuality.UnitRows(queries, nameof(queries));
        var c = EmbeddingQuality.UnitRows(corpus, nameof(corpus));
        if (q[0].Length != c[0].Length)
        {
            throw new ArgumentException($"Queries have {q[0].Length} dimensions and the corpus {c[0].Length}.", nameof(corpus));
        }
        var ranks = new int[q.Length];
        Parallel.For(0, q.Length, i =>
        {
            var target = EmbeddingQuality.Dot(q[i], c[i]);
            var rank = 1;
            for (var j = 0; j < c.Length; j++)
            {
                if (j == i)
                {
                    continue;
                }
                var s = EmbeddingQuality.Dot(q[i], c[j]);
                if (s > target || (s == target && j < i))
                {
                    rank++;
                }
            }
            ranks[i] = rank;
        });
        return ranks;
    }
}
