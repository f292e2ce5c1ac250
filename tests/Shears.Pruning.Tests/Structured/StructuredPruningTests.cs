using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Structured;

namespace Shears.Pruning.Tests.Structured;

public class StructuredPruningTests
{
    // Row norms: L1 5, 7, 1, 3 · L2 3, 5, 1, 3 · L∞ 2, 4, 1, 3.
    // Column norms: L1 2, 5, 9 · L2 √2, √13, √29 · L∞ 1, 3, 4.
    private static readonly float[] Worked =
    [
        1, -2, 2,
        0, 3, -4,
        -1, 0, 0,
        0, 0, -3,
    ];

    public static TheoryData<TensorDType> Dtypes => new() { TensorDType.F32, TensorDType.F16, TensorDType.BF16 };

    [Theory, MemberData(nameof(Dtypes))]
    public void WorkedRowNorms(TensorDType dtype)
    {
        var raw = Encode(Worked, dtype);
        Assert.Equal([5, 7, 1, 3], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Rows, 1, "w"));
        Assert.Equal([3, 5, 1, 3], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Rows, 2, "w"));
        Assert.Equal([2, 4, 1, 3], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Rows, double.PositiveInfinity, "w"));
    }

    [Theory, MemberData(nameof(Dtypes))]
    public void WorkedColumnNorms(TensorDType dtype)
    {
        var raw = Encode(Worked, dtype);
        Assert.Equal([2, 5, 9], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Columns, 1, "w"));
        Assert.Equal([Math.Sqrt(2), Math.Sqrt(13), Math.Sqrt(29)], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Columns, 2, "w"));
        Assert.Equal([1, 3, 4], StructuredPruning.Norms(raw, dtype, 4, 3, StructuredAxis.Columns, double.PositiveInfinity, "w"));
    }

    [Theory]
    [InlineData(1.0, new[] { 2, 3 })]   // L1 1 and 3
    [InlineData(2.0, new[] { 0, 2 })]   // L2 1, then 3 twice: row 0 before row 3
    [InlineData(double.PositiveInfinity, new[] { 0, 2 })] // L∞ 1 and 2
    public void HalfTheRowsGo(double p, int[] expectedRows)
    {
        var mask = new BitMask(12);
        long newly = StructuredPruning.Prune(Encode(Worked, TensorDType.F32), TensorDType.F32, 4, 3, StructuredAxis.Rows, p, 0.5, mask, "w");
        Assert.Equal(2, newly);
        Assert.Equal(ExpectedRows(4, 3, expectedRows), mask.ToBools());
    }

    [Fact]
    public void HalfOfThreeColumnsIsTwo()
    {
        // 0.5 × 3 = 1.5 rounds half to even: 2 columns.
        var mask = new BitMask(12);
        Assert.Equal(2, StructuredPruning.Prune(Encode(Worked, TensorDType.F32), TensorDType.F32, 4, 3, StructuredAxis.Columns, 1, 0.5, mask, "w"));
        Assert.Equal(ExpectedColumns(4, 3, [0, 1]), mask.ToBools());
    }

    [Fact]
    public void EqualNormsGoByLowerIndex()
    {
        var mask = new BitMask(6 * 2);
        long newly = StructuredPruning.MaskSmallest([1, 1, 1, 1, 1, 1], mask, 6, 2, StructuredAxis.Rows, 0.5);
        Assert.Equal(3, newly);
        Assert.Equal(ExpectedRows(6, 2, [0, 1, 2]), mask.ToBools());

        var columns = new BitMask(2 * 5);
        StructuredPruning.MaskSmallest([2, 1, 2, 1, 2], columns, 2, 5, StructuredAxis.Columns, 0.6);
        Assert.Equal(ExpectedColumns(2, 5, [1, 3, 0]), columns.ToBools());
    }

    [Fact]
    public void RoundsAreCumulative()
    {
        var norms = new double[] { 8, 7, 6, 5, 4, 3, 2, 1 };
        var mask = new BitMask(8 * 2);
        Assert.Equal(2, StructuredPruning.MaskSmallest(norms, mask, 8, 2, StructuredAxis.Rows, 0.25));
        Assert.Equal(ExpectedRows(8, 2, [6, 7]), mask.ToBools());
        Assert.Equal(2, StructuredPruning.MaskSmallest(norms, mask, 8, 2, StructuredAxis.Rows, 0.5));
        Assert.Equal(ExpectedRows(8, 2, [4, 5, 6, 7]), mask.ToBools());
        Assert.Equal(0, StructuredPruning.MaskSmallest(norms, mask, 8, 2, StructuredAxis.Rows, 0.5));
        Assert.Equal(0, StructuredPruning.MaskSmallest(norms, mask, 8, 2, StructuredAxis.Rows, 0.25)); // never unmasks
        Assert.Equal(3, StructuredPruning.MaskSmallest(norms, mask, 8, 2, StructuredAxis.Rows, 0.875));
        Assert.Equal(ExpectedRows(8, 2, [1, 2, 3, 4, 5, 6, 7]), mask.ToBools());
    }

    [Theory]
    [InlineData(0.5, 5, 2)]  // 2.5 → 2
    [InlineData(0.3, 5, 2)]  // 1.5 → 2
    [InlineData(0.7, 5, 4)]  // 3.5 → 4
    [InlineData(0.1, 5, 0)]  // 0.5 → 0
    [InlineData(1.0, 5, 5)]
    [InlineData(0.0, 5, 0)]
    public void CountRoundsHalfToEven(double s, int rows, int expected)
    {
        var mask = new BitMask(rows);
        Assert.Equal(expected, StructuredPruning.MaskSmallest(new double[rows], mask, rows, 1, StructuredAxis.Rows, s));
    }

    [Fact]
    public void FullyMaskedUnitsCountTowardsTheTarget()
    {
        var mask = new BitMask(4 * 3);
        mask.SetRange(3, 3); // row 1, which has the largest norm
        Assert.Equal(0, StructuredPruning.MaskSmallest([1, 9, 2, 3], mask, 4, 3, StructuredAxis.Rows, 0.25));
        Assert.Equal(1, StructuredPruning.MaskSmallest([1, 9, 2, 3], mask, 4, 3, StructuredAxis.Rows, 0.5));
        Assert.Equal(ExpectedRows(4, 3, [0, 1]), mask.ToBools());

        var cols = new BitMask(2 * 3);
        cols.Set(2); cols.Set(5); // column 2
        cols.Set(0);              // half of column 0: still a candidate
        Assert.Equal(1, StructuredPruning.MaskSmallest([5, 6, 0], cols, 2, 3, StructuredAxis.Columns, 2.0 / 3));
        Assert.Equal(ExpectedColumns(2, 3, [0, 2]), cols.ToBools());
    }

    [Fact]
    public void NormsSeeMaskedElementsAsZero()
    {
        // Row 0 is the largest until its big element is masked, as PyTorch scores the masked weight.
        float[] w = [10, 1, 3, 3, 4, 4];
        var raw = Encode(w, TensorDType.F32);
        var mask = new BitMask(6);
        Assert.Equal([11, 6, 8], StructuredPruning.Norms(raw, TensorDType.F32, 3, 2, StructuredAxis.Rows, 1, "w", mask));
        mask.Set(0);
        Assert.Equal([1, 6, 8], StructuredPruning.Norms(raw, TensorDType.F32, 3, 2, StructuredAxis.Rows, 1, "w", mask));
        Assert.Equal(1, StructuredPruning.Prune(raw, TensorDType.F32, 3, 2, StructuredAxis.Rows, 1, 1.0 / 3, mask, "w"));
        Assert.Equal(ExpectedRows(3, 2, [0]), mask.ToBools());
    }

    [Fact]
    public void NaNIsAnErrorNamingTheTensor()
    {
        var raw = Encode([1, float.NaN, 2, 3], TensorDType.BF16);
        var e = Assert.Throws<ArgumentException>(() =>
            StructuredPruning.Norms(raw, TensorDType.BF16, 2, 2, StructuredAxis.Columns, 2, "model.layers.0.mlp.up_proj.weight"));
        Assert.Contains("model.layers.0.mlp.up_proj.weight", e.Message);
        Assert.Contains("NaN", e.Message);

        var masked = new BitMask(4);
        masked.Set(1);
        Assert.Throws<ArgumentException>(() =>
            StructuredPruning.Norms(raw, TensorDType.BF16, 2, 2, StructuredAxis.Rows, 1, "w", masked));
        Assert.Throws<ArgumentException>(() =>
            StructuredPruning.MaskSmallest([1, double.NaN], new BitMask(4), 2, 2, StructuredAxis.Rows, 0.5));
    }

    [Fact]
    public void InfinityRanksLargest()
    {
        var raw = Encode([float.NegativeInfinity, 0, 1e30f, 1e30f], TensorDType.F32);
        var mask = new BitMask(4);
        StructuredPruning.Prune(raw, TensorDType.F32, 2, 2, StructuredAxis.Rows, 2, 0.5, mask, "w");
        Assert.Equal(ExpectedRows(2, 2, [1]), mask.ToBools());
    }

    [Fact]
    public void ArgumentsAreValidated()
    {
        var raw = Encode(Worked, TensorDType.F32);
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.Norms(raw, TensorDType.F32, 4, 3, StructuredAxis.Rows, 3, "w"));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.Norms(raw, TensorDType.F32, 4, 3, StructuredAxis.Rows, 0, "w"));
        var e = Assert.Throws<ArgumentException>(() => StructuredPruning.Norms(raw, TensorDType.F32, 3, 3, StructuredAxis.Rows, 1, "q.weight"));
        Assert.Contains("q.weight", e.Message);
        Assert.Throws<ArgumentException>(() => StructuredPruning.Norms(raw, TensorDType.I32, 4, 3, StructuredAxis.Rows, 1, "w"));
        Assert.Throws<ArgumentException>(() => StructuredPruning.Norms(raw, TensorDType.F32, 4, 3, StructuredAxis.Rows, 1, "w", new BitMask(11)));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.Norms(raw, TensorDType.F32, 4, 3, (StructuredAxis)7, 1, "w"));

        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.MaskSmallest([1, 2, 3, 4], new BitMask(12), 4, 3, StructuredAxis.Rows, 1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredPruning.MaskSmallest([1, 2, 3, 4], new BitMask(12), 4, 3, StructuredAxis.Rows, double.NaN));
        Assert.Throws<ArgumentException>(() => StructuredPruning.MaskSmallest([1, 2, 3], new BitMask(12), 4, 3, StructuredAxis.Rows, 0.5));
        Assert.Throws<ArgumentException>(() => StructuredPruning.MaskSmallest([1, 2, 3, 4], new BitMask(13), 4, 3, StructuredAxis.Rows, 0.5));
    }

    [Fact]
    public void FailedCallLeavesTheMaskAsItWas()
    {
        var mask = new BitMask(12);
        mask.Set(4);
        var before = mask.Clone();
        Assert.Throws<ArgumentException>(() => StructuredPruning.MaskSmallest([1, double.NaN, 3, 4], mask, 4, 3, StructuredAxis.Rows, 0.5));
        Assert.True(mask.SequenceEqual(before));
    }

    [Theory]
    [InlineData(TensorDType.F32, 1)]
    [InlineData(TensorDType.F32, 2)]
    [InlineData(TensorDType.BF16, 3)]
    [InlineData(TensorDType.BF16, 4)]
    [InlineData(TensorDType.F16, 5)]
    public void MatchesNaiveReferenceWithHeavyTies(TensorDType dtype, int seed)
    {
        var rng = new Random(seed);
        float[] pool = [0, 0.5f, -0.5f, 1, -1, 2, -2, 0, -0f];
        double[] ps = [1, 2, double.PositiveInfinity];
        for (int trial = 0; trial < 60; trial++)
        {
            int rows = rng.Next(1, 18), cols = rng.Next(1, 18);
            var w = new float[rows * cols];
            for (int i = 0; i < w.Length; i++)
                w[i] = rng.Next(200) == 0 ? float.PositiveInfinity : pool[rng.Next(pool.Length)];
            var axis = rng.Next(2) == 0 ? StructuredAxis.Rows : StructuredAxis.Columns;
            double p = ps[rng.Next(ps.Length)];
            var raw = Encode(w, dtype);

            var mask = new BitMask(w.Length);
            for (int i = 0; i < w.Length; i++) if (rng.Next(6) == 0) mask.Set(i);
            int units = axis == StructuredAxis.Rows ? rows : cols;
            if (rng.Next(2) == 0) MaskUnitNaively(mask, rows, cols, axis, rng.Next(units));

            for (int round = 0; round < 3; round++)
            {
                double s = rng.Next(0, 9) / 8.0;
                var expectedNorms = NaiveNorms(w, mask, rows, cols, axis, p);
                var norms = StructuredPruning.Norms(raw, dtype, rows, cols, axis, p, "w", mask);
                Assert.Equal(expectedNorms, norms);

                var expectedMask = mask.Clone();
                long expectedNew = NaiveMaskSmallest(expectedNorms, expectedMask, rows, cols, axis, s);
                Assert.Equal(expectedNew, StructuredPruning.MaskSmallest(norms, mask, rows, cols, axis, s));
                Assert.True(expectedMask.SequenceEqual(mask), $"trial {trial} round {round}: masks differ");
                long fullUnits = Enumerable.Range(0, units).Count(u => UnitMasked(mask, rows, cols, axis, u));
                Assert.True(fullUnits >= Math.Round(s * units, MidpointRounding.ToEven));
            }
        }
    }

    private static double[] NaiveNorms(float[] w, BitMask mask, int rows, int cols, StructuredAxis axis, double p)
    {
        int units = axis == StructuredAxis.Rows ? rows : cols, length = axis == StructuredAxis.Rows ? cols : rows;
        var norms = new double[units];
        for (int u = 0; u < units; u++)
        {
            double acc = 0;
            for (int t = 0; t < length; t++)
            {
                int i = axis == StructuredAxis.Rows ? u * cols + t : t * cols + u;
                double a = mask[i] ? 0 : Math.Abs((double)w[i]);
                if (p == 1) acc += a;
                else if (p == 2) acc += a * a;
                else acc = Math.Max(acc, a);
            }
            norms[u] = p == 2 ? Math.Sqrt(acc) : acc;
        }
        return norms;
    }

    private static long NaiveMaskSmallest(double[] norms, BitMask mask, int rows, int cols, StructuredAxis axis, double s)
    {
        int units = norms.Length;
        var open = Enumerable.Range(0, units).Where(u => !UnitMasked(mask, rows, cols, axis, u)).ToList();
        long need = (long)Math.Round(s * units, MidpointRounding.ToEven) - (units - open.Count);
        if (need <= 0) return 0;
        foreach (int u in open.OrderBy(u => norms[u]).ThenBy(u => u).Take((int)need))
            MaskUnitNaively(mask, rows, cols, axis, u);
        return need;
    }

    private static bool UnitMasked(BitMask mask, int rows, int cols, StructuredAxis axis, int u) =>
        axis == StructuredAxis.Rows
            ? Enumerable.Range(0, cols).All(c => mask[u * cols + c])
            : Enumerable.Range(0, rows).All(r => mask[r * cols + u]);

    private static void MaskUnitNaively(BitMask mask, int rows, int cols, StructuredAxis axis, int u)
    {
        if (axis == StructuredAxis.Rows) for (int c = 0; c < cols; c++) mask.Set(u * cols + c);
        else for (int r = 0; r < rows; r++) mask.Set(r * cols + u);
    }

    private static bool[] ExpectedRows(int rows, int cols, int[] masked)
    {
        var b = new bool[rows * cols];
        foreach (int r in masked) for (int c = 0; c < cols; c++) b[r * cols + c] = true;
        return b;
    }

    private static bool[] ExpectedColumns(int rows, int cols, int[] masked)
    {
        var b = new bool[rows * cols];
        foreach (int c in masked) for (int r = 0; r < rows; r++) b[r * cols + c] = true;
        return b;
    }

    /// <summary>Little-endian bytes; the test values are exact in every dtype (bf16 by truncation).</summary>
    internal static byte[] Encode(float[] values, TensorDType dtype)
    {
        int size = dtype.ElementSize();
        var bytes = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            var dst = bytes.AsSpan(i * size, size);
            switch (dtype)
            {
                case TensorDType.F32: BitConverter.TryWriteBytes(dst, values[i]); break;
                case TensorDType.F16: BitConverter.TryWriteBytes(dst, (Half)values[i]); break;
                case TensorDType.BF16: BitConverter.TryWriteBytes(dst, (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16)); break;
                default: throw new ArgumentException(dtype.ToString());
            }
        }
        return bytes;
    }
}
