using Shears.Pruning.Checkpoints;
using Shears.Pruning.Heads;
using Shears.Pruning.Tests.Structured;

namespace Shears.Pruning.Tests.Heads;

public class HeadPruningTests
{
    /// <summary>Weights whose every element of a row (k, q, v) or of a row block is a given constant.</summary>
    private static HeadWeights Layer(
        int hidden, int heads, int kvHeads, int d, Func<int, int, float> q, Func<int, int, float> k,
        Func<int, int, float> v, Func<int, int, float> o, TensorDType dtype = TensorDType.F32)
    {
        byte[] Make(int rows, int cols, Func<int, int, float> f)
        {
            var w = new float[rows * cols];
            for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) w[r * cols + c] = f(r, c);
            return StructuredPruningTests.Encode(w, dtype);
        }
        return new HeadWeights(
            Make(heads * d, hidden, q), Make(kvHeads * d, hidden, k), Make(kvHeads * d, hidden, v),
            Make(hidden, heads * d, o), dtype, hidden, heads, kvHeads, d, "model.layers.7.self_attn");
    }

    // H = 4, Hkv = 2 (g = 2), d = 2, hidden = 3. q rows of head h hold ±{3, 1, 2, 1}[h]; o all 1;
    // k rows of KV head 0 hold 2, of KV head 1 hold 1; v all -1.
    private static HeadWeights Worked(TensorDType dtype = TensorDType.F32) => Layer(3, 4, 2, 2,
        q: (r, c) => (c % 2 == 0 ? 1 : -1) * new float[] { 3, 1, 2, 1 }[r / 2],
        k: (r, _) => r < 2 ? 2 : 1, v: (_, _) => -1, o: (_, _) => 1, dtype);

    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.BF16)]
    [InlineData(TensorDType.F16)]
    public void WorkedScores(TensorDType dtype)
    {
        // QueryL1: 2 rows × 3 columns × value = 18, 6, 12, 6.
        Assert.Equal([18, 6, 12, 6], HeadPruning.Scores(Worked(dtype), HeadScore.QueryL1));
        // + o columns (3 rows × 2 columns = 6) + (k 12 or 6, v 6) / 2.
        Assert.Equal([18 + 6 + 9, 6 + 6 + 9, 12 + 6 + 6, 6 + 6 + 6], HeadPruning.Scores(Worked(dtype), HeadScore.QkvoL1));
    }

    [Fact]
    public void ScoresMatchNaiveReference()
    {
        var rng = new Random(11);
        for (int trial = 0; trial < 20; trial++)
        {
            int kv = rng.Next(1, 4), g = rng.Next(1, 4), h = kv * g, d = rng.Next(1, 5), hidden = rng.Next(1, 9);
            float R(int _, int __) => (float)Math.Round(rng.NextDouble() * 8 - 4, 1);
            var w = Layer(hidden, h, kv, d, R, R, R, R);
            float[] Q = Decode(w.Q), K = Decode(w.K), V = Decode(w.V), O = Decode(w.O);
            var expectedQ = new double[h];
            var expectedAll = new double[h];
            for (int head = 0; head < h; head++)
            {
                double q = 0, o = 0, k = 0, v = 0;
                for (int r = head * d; r < (head + 1) * d; r++)
                    for (int c = 0; c < hidden; c++) q += Math.Abs(Q[r * hidden + c]);
                for (int r = 0; r < hidden; r++)
                    for (int c = head * d; c < (head + 1) * d; c++) o += Math.Abs(O[r * h * d + c]);
                int j = head / g;
                for (int r = j * d; r < (j + 1) * d; r++)
                    for (int c = 0; c < hidden; c++) { k += Math.Abs(K[r * hidden + c]); v += Math.Abs(V[r * hidden + c]); }
                expectedQ[head] = q;
                expectedAll[head] = q + o + (k + v) / g;
            }
            AssertClose(expectedQ, HeadPruning.Scores(w, HeadScore.QueryL1));
            AssertClose(expectedAll, HeadPruning.Scores(w, HeadScore.QkvoL1));
        }
    }

    [Fact]
    public void PrunedHeadTakesItsQueryRowsAndOutputColumns()
    {
        var w = Layer(3, 4, 4, 2, Zero, Zero, Zero, Zero);
        var m = HeadPruning.MaskHeads(w, [1, 3]);
        Assert.Equal(Rows(8, 3, 2, 3, 6, 7), m.Q.ToBools());
        Assert.Equal(Columns(3, 8, 2, 3, 6, 7), m.O.ToBools());
        // Without GQA every head has its own k and v rows.
        Assert.Equal(Rows(8, 3, 2, 3, 6, 7), m.K.ToBools());
        Assert.Equal(Rows(8, 3, 2, 3, 6, 7), m.V.ToBools());
    }

    [Fact]
    public void GroupedKvRowsGoOnlyWithTheirWholeGroup()
    {
        // H = 8, Hkv = 2: KV head 0 serves query heads 0-3, KV head 1 heads 4-7.
        var w = Layer(hidden: 4, heads: 8, kvHeads: 2, d: 2, Zero, Zero, Zero, Zero);
        var whole = HeadPruning.MaskHeads(w, [0, 1, 2, 3]);
        Assert.Equal(Rows(16, 4, 0, 1, 2, 3, 4, 5, 6, 7), whole.Q.ToBools());
        Assert.Equal(Columns(4, 16, 0, 1, 2, 3, 4, 5, 6, 7), whole.O.ToBools());
        Assert.Equal(Rows(4, 4, 0, 1), whole.K.ToBools());
        Assert.Equal(Rows(4, 4, 0, 1), whole.V.ToBools());

        var partial = HeadPruning.MaskHeads(w, [0, 1, 2]);
        Assert.Equal(Rows(16, 4, 0, 1, 2, 3, 4, 5), partial.Q.ToBools());
        Assert.Equal(Columns(4, 16, 0, 1, 2, 3, 4, 5), partial.O.ToBools());
        Assert.Equal(0, partial.K.CountSet());
        Assert.Equal(0, partial.V.CountSet());

        var mixed = HeadPruning.MaskHeads(w, [7, 4, 5, 6, 0, 5]);
        Assert.Equal(Rows(4, 4, 2, 3), mixed.K.ToBools());
        Assert.Equal(Rows(4, 4, 2, 3), mixed.V.ToBools());
        Assert.Equal(10 * 4, mixed.Q.CountSet());
    }

    [Fact]
    public void SelectHeadsIsCumulativeWithTiesByLowerIndex()
    {
        double[] scores = [5, 1, 3, 1, 2, 9, 0.5, 1];
        var pruned = new List<int>();
        Assert.Equal([1, 6], Next(0.25));     // 0.5, then the first of three 1s
        Assert.Equal([3, 7], Next(0.5));
        Assert.Empty(Next(0.5));
        Assert.Empty(Next(0.3125));          // 2.5 → 2, already 4
        Assert.Equal([2, 4], Next(0.75));
        Assert.Equal([0, 5], Next(1));

        int[] Next(double s)
        {
            var chosen = HeadPruning.SelectHeads(scores, s, pruned);
            pruned.AddRange(chosen);
            return chosen;
        }

        Assert.Equal([0, 1], HeadPruning.SelectHeads([1, 1, 1, 1], 0.375, [])); // 1.5 → 2
        Assert.Equal([1], HeadPruning.SelectHeads([1, 1, 1, 1], 0.625, [0, 0])); // 2.5 → 2; duplicates count once
    }

    [Fact]
    public void SelectHeadsGlobalTiesByLayerThenHead()
    {
        double[][] scores = [[3, 1], [1, 0.5, 7]];
        var first = HeadPruning.SelectHeadsGlobal(scores, 0.5, []); // 2.5 → 2
        Assert.Equal([(0, 1), (1, 1)], first);
        var second = HeadPruning.SelectHeadsGlobal(scores, 0.8, first); // 4
        Assert.Equal([(0, 0), (1, 0)], second);
        Assert.Empty(HeadPruning.SelectHeadsGlobal(scores, 0.8, [.. first, .. second]));
        Assert.Throws<ArgumentOutOfRangeException>(() => HeadPruning.SelectHeadsGlobal(scores, 0.5, [(1, 3)]));
        Assert.Throws<ArgumentException>(() => HeadPruning.SelectHeadsGlobal([[1, double.NaN]], 0.5, []));
    }

    [Fact]
    public void SelectHeadsGlobalMatchesNaiveReference()
    {
        var rng = new Random(5);
        for (int trial = 0; trial < 50; trial++)
        {
            var scores = Enumerable.Range(0, rng.Next(1, 5))
                .Select(_ => Enumerable.Range(0, rng.Next(1, 7)).Select(_ => (double)rng.Next(4)).ToArray()).ToArray();
            var pruned = new List<(int Layer, int Head)>();
            foreach (double s in new[] { 0.2, 0.5, 0.9 })
            {
                var all = scores.SelectMany((l, li) => l.Select((x, h) => (x, li, h))).ToList();
                long need = (long)Math.Round(s * all.Count, MidpointRounding.ToEven) - pruned.Count;
                var expected = all.Where(t => !pruned.Contains((t.li, t.h))).OrderBy(t => t.x).ThenBy(t => t.li).ThenBy(t => t.h)
                    .Take((int)Math.Max(0, need)).Select(t => (t.li, t.h)).OrderBy(t => t).ToArray();
                var actual = HeadPruning.SelectHeadsGlobal(scores, s, pruned);
                Assert.Equal(expected, actual);
                pruned.AddRange(actual);
            }
        }
    }

    [Fact]
    public void ShapesAreValidated()
    {
        var w = Worked();
        Assert.Contains("multiple", Assert.Throws<ArgumentException>(() => (w with { KvHeads = 3 }).Validate()).Message);
        Assert.Contains("positive", Assert.Throws<ArgumentException>(() => (w with { HeadDim = 0 }).Validate()).Message);
        Assert.Contains("model.layers.7.self_attn.q_proj", Assert.Throws<ArgumentException>(() => HeadPruning.Scores(w with { Q = w.Q[..^4] }, HeadScore.QueryL1)).Message);
        Assert.Contains("k_proj", Assert.Throws<ArgumentException>(() => HeadPruning.MaskHeads(w with { K = w.Q }, [0])).Message);
        Assert.Contains("v_proj", Assert.Throws<ArgumentException>(() => HeadPruning.MaskHeads(w with { V = w.Q }, [0])).Message);
        Assert.Contains("o_proj", Assert.Throws<ArgumentException>(() => HeadPruning.MaskHeads(w with { O = w.O[4..] }, [0])).Message);
        Assert.Contains("hidden 4", Assert.Throws<ArgumentException>(() => HeadPruning.MaskHeads(w with { Hidden = 4 }, [0])).Message);
        Assert.Throws<ArgumentException>(() => HeadPruning.Scores(w with { DType = TensorDType.I8 }, HeadScore.QueryL1));
        Assert.Throws<ArgumentOutOfRangeException>(() => HeadPruning.MaskHeads(w, [4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => HeadPruning.MaskHeads(w, [-1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => HeadPruning.SelectHeads([1, 2], 1.1, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => HeadPruning.SelectHeads([1, 2], 0.5, [2]));
        Assert.Throws<ArgumentException>(() => HeadPruning.SelectHeads([1, double.NaN], 0.5, []));
    }

    [Fact]
    public void NaNInAWeightNamesTheProjection()
    {
        var w = Layer(3, 4, 2, 2, One, (r, c) => r == 3 && c == 1 ? float.NaN : 1, One, One);
        Assert.Equal([6, 6, 6, 6], HeadPruning.Scores(w, HeadScore.QueryL1));
        var e = Assert.Throws<ArgumentException>(() => HeadPruning.Scores(w, HeadScore.QkvoL1));
        Assert.Contains("model.layers.7.self_attn.k_proj", e.Message);
    }

    private static float Zero(int r, int c) => 0;

    private static float One(int r, int c) => 1;

    private static bool[] Rows(int rows, int cols, params int[] masked)
    {
        var b = new bool[rows * cols];
        foreach (int r in masked) for (int c = 0; c < cols; c++) b[r * cols + c] = true;
        return b;
    }

    private static bool[] Columns(int rows, int cols, params int[] masked)
    {
        var b = new bool[rows * cols];
        foreach (int c in masked) for (int r = 0; r < rows; r++) b[r * cols + c] = true;
        return b;
    }

    private static float[] Decode(ReadOnlyMemory<byte> raw)
    {
        var f = new float[raw.Length / 4];
        for (int i = 0; i < f.Length; i++) f[i] = BitConverter.ToSingle(raw.Span[(4 * i)..]);
        return f;
    }

    private static void AssertClose(double[] expected, double[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-12 * Math.Max(1, Math.Abs(expected[i])), $"head {i}: {expected[i]} vs {actual[i]}");
    }
}
