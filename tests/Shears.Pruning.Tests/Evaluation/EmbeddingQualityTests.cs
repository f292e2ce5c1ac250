using Shears.Pruning.Evaluation;

namespace Shears.Pruning.Tests.Evaluation;

public class EmbeddingQualityTests
{
    /// <summary>A unit vector in the plane at <paramref name="degrees"/>.</summary>
    private static float[] At(double degrees) => [(float)Math.Cos(degrees * Math.PI / 180), (float)Math.Sin(degrees * Math.PI / 180)];

    [Fact]
    public void CosineIsTheAngleAndZeroForAZeroVector()
    {
        Assert.Equal(0.96, EmbeddingQuality.Cosine([3, 4], [4, 3]), 12); // (12 + 12) / (5 · 5)
        Assert.Equal(-1.0, EmbeddingQuality.Cosine([1, 2], [-2, -4]), 12);
        Assert.Equal(1.0, EmbeddingQuality.Cosine([2, 0], [0.5f, 0]), 12); // scale does not matter
        Assert.Equal(0.0, EmbeddingQuality.Cosine([0, 0], [1, 1]));
        Assert.Throws<ArgumentException>(() => EmbeddingQuality.Cosine([1, 2], [1, 2, 3]));
    }

    [Fact]
    public void FidelityIsTheMeanFifthPercentileAndMinimumOfTheCosines()
    {
        float[][] dense = [[1, 0], [0, 1], [1, 1], [3, 4]];
        float[][] pruned = [[1, 0], [1, 1], [2, 2], [4, 3]];
        // cosines 1, 1/√2, 1, 0.96; sorted 0.7071…, 0.96, 1, 1
        var r = EmbeddingQuality.Fidelity(dense, pruned);

        var s = Math.Sqrt(0.5);
        Assert.Equal(4, r.Count);
        Assert.Equal((1 + s + 1 + 0.96) / 4, r.Mean, 12);
        Assert.Equal(s + 0.15 * (0.96 - s), r.Percentile5, 12); // position 0.05 · 3 = 0.15 between the two smallest
        Assert.Equal(s, r.Min, 12);
    }

    [Fact]
    public void PercentilesInterpolateBetweenClosestRanks()
    {
        Assert.Equal(0.5, EmbeddingQuality.Percentile([0.0, 10.0], 0.05), 12);
        Assert.Equal(3.0, EmbeddingQuality.Percentile([3.0], 0.05));
        Assert.Equal(4.0, EmbeddingQuality.Percentile([1.0, 2.0, 4.0], 1.0));
        Assert.Equal(1.5, EmbeddingQuality.Percentile([1.0, 2.0, 4.0], 0.25), 12);
        Assert.Throws<ArgumentException>(() => EmbeddingQuality.Percentile([], 0.05));
    }

    [Fact]
    public void NearestNeighboursExcludeTheSentenceItselfAndBreakTiesByIndex()
    {
        float[][] v = [[1, 0], [0, 1], [0, -1], [-1, 0]];
        var nn = EmbeddingQuality.NearestNeighbours(v, 2);
        // From [1, 0]: [0, 1] and [0, −1] tie at 0, ahead of [−1, 0] at −1; the lower index comes first.
        Assert.Equal([1, 2], nn[0]);
        Assert.Equal([0, 3], nn[1]);
        Assert.Equal([0, 3], nn[2]);
        Assert.Equal([1, 2], nn[3]);
    }

    [Fact]
    public void NeighbourAgreementCountsTheDenseNeighboursThatStay()
    {
        // Five sentences on the unit circle. Under the pruned model sentence C moves from 30° to 60°.
        float[][] dense = [At(0), At(10), At(30), At(90), At(95)];
        float[][] pruned = [At(0), At(10), At(60), At(90), At(95)];
        // 2 nearest, dense:  A {B, C}  B {A, C}  C {B, A}  D {E, C}  E {D, C}
        //            pruned: A {B, C}  B {A, C}  C {D, E}  D {E, C}  E {D, C}
        Assert.Equal(0.8, EmbeddingQuality.NeighbourAgreement(dense, pruned, k: 2), 12);
        Assert.Equal(1.0, EmbeddingQuality.NeighbourAgreement(dense, dense, k: 2));
        // The dense neighbours found once (as a run does for all its rounds) give the same figures.
        var denseNeighbours = EmbeddingQuality.NearestNeighbours(dense, 2);
        Assert.Equal(0.8, EmbeddingQuality.NeighbourAgreement(denseNeighbours, pruned, 2), 12);
        Assert.Equal(1.0, EmbeddingQuality.NeighbourAgreement(denseNeighbours, dense, 2));
        Assert.Throws<ArgumentException>(() => EmbeddingQuality.NeighbourAgreement(denseNeighbours, pruned, 3));
        Assert.Throws<ArgumentException>(() => EmbeddingQuality.NeighbourAgreement(denseNeighbours, pruned[..4], 2));

        // Only the order inside the top k changes: full agreement. Sentence B moves from 10° to 25°:
        // B's neighbours become C (5°) then A (25°), the same set as A (10°) then C (20°).
        float[][] reordered = [At(0), At(25), At(30), At(90), At(95)];
        Assert.Equal(1.0, EmbeddingQuality.NeighbourAgreement(dense, reordered, k: 2));
    }

    [Fact]
    public void NeighbourAgreementNeedsMoreSentencesThanNeighboursAndAlignedSets()
    {
        float[][] three = [[1, 0], [0, 1], [1, 1]];
        Assert.Contains("more than 3", Assert.Throws<ArgumentException>(() => EmbeddingQuality.NeighbourAgreement(three, three, k: 3)).Message);
        Assert.Contains("same sentences", Assert.Throws<ArgumentException>(() => EmbeddingQuality.NeighbourAgreement(three, three[..2], k: 1)).Message);
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => EmbeddingQuality.NearestNeighbours([[1, 0], [float.NaN, 0]], 1)).Message);
    }

    [Fact]
    public void RetrievalRanksTheMatchAmongTheWholeCorpus()
    {
        float[][] corpus = [[1, 0], [0, 1], [-1, 0]];
        float[][] queries = [[1, 0.1f], [1, 0.5f], [0, 1]];
        // query 0: corpus 0 first → rank 1.
        // query 1: cos to corpus 0 = 0.894 > cos to corpus 1 = 0.447 → rank 2.
        // query 2: its match (corpus 2) scores 0; corpus 1 scores 1 and corpus 0 ties at 0 with a lower index → rank 3.
        Assert.Equal([1, 2, 3], ParaphraseRetrieval.Ranks(queries, corpus));

        var r = ParaphraseRetrieval.Measure(queries, corpus);
        Assert.Equal(3, r.Count);
        Assert.Equal(1.0 / 3, r.Top1, 12);
        Assert.Equal((1 + 1.0 / 2 + 1.0 / 3) / 3, r.Mrr, 12);
    }

    [Fact]
    public void RetrievalOfAPrunedModelAgainstItsOwnCorpusAndTheDenseOne()
    {
        float[][] denseCorpus = [[1, 0], [0, 1]];
        float[][] prunedCorpus = [[0, 1], [1, 0]]; // the pruned model swapped the two directions
        float[][] prunedQueries = [[0, 1], [1, 0]];

        var r = ParaphraseRetrieval.Measure(prunedQueries, prunedCorpus, denseCorpus);

        Assert.Equal(new RetrievalResult(1.0, 1.0, 2), r.SameModel); // consistent with itself
        Assert.Equal(new RetrievalResult(0.0, 0.5, 2), r.DenseCorpus); // lost against the old index
        Assert.Throws<ArgumentException>(() => ParaphraseRetrieval.Measure(prunedQueries, denseCorpus[..1]));
    }
}
