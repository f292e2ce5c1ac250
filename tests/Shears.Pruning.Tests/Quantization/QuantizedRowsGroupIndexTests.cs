using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Tests.Quantization;

public class QuantizedRowsGroupIndexTests
{
    // One row of 4 columns in two groups of 2: group 0 has scale 0.5, group 1 scale 0.25 with zero point 1.
    private static readonly QuantScheme Scheme = QuantScheme.Parse(QuantScheme.W4A16Asym, 2);
    private static readonly QuantParams[] Groups = [new(0.5f, 0), new(0.25f, 1)];
    private static readonly sbyte[] Values = [2, -3, 5, 1];

    [Fact]
    public void WithoutAGroupIndexColumnsTakeConsecutiveGroups()
    {
        // (2 − 0)·0.5, (−3 − 0)·0.5, (5 − 1)·0.25, (1 − 1)·0.25.
        var rows = new QuantizedRows(Scheme, TensorDType.F32, 1, 4, Values, Groups, [1, -1.5f, 1, 0.5f]);

        Assert.False(rows.HasGroupIndex);
        Assert.True(rows.GroupIndex.IsEmpty);
        Assert.Null(rows.GroupIndexBytes());
        Assert.Equal([0, 0, 1, 1], Enumerable.Range(0, 4).Select(rows.GroupOf));
        Assert.Equal([1, -1.5f, 1, 0], MemoryMarshal.Cast<byte, float>(rows.DequantizedBytes()).ToArray());
        Assert.Equal(0.5, rows.AbsErrorSum);
        Assert.Equal(0.5, rows.MaxAbsError);
    }

    [Fact]
    public void AGroupIndexPicksEachColumnsGroup()
    {
        // g_idx = (1, 0, 0, 1): (2 − 1)·0.25, (−3)·0.5, 5·0.5, (1 − 1)·0.25.
        int[] gIdx = [1, 0, 0, 1];
        var rows = new QuantizedRows(Scheme, TensorDType.F32, 1, 4, Values, Groups, [0.25f, -1.5f, 2.5f, 0.25f], gIdx);
        gIdx[0] = 0; // the rows keep their own copy

        Assert.True(rows.HasGroupIndex);
        Assert.Equal([1, 0, 0, 1], rows.GroupIndex.ToArray());
        Assert.Equal([1, 0, 0, 1], MemoryMarshal.Cast<byte, int>(rows.GroupIndexBytes()).ToArray());
        Assert.Equal([0.25f, -1.5f, 2.5f, 0], MemoryMarshal.Cast<byte, float>(rows.DequantizedBytes()).ToArray());
        Assert.Equal(0.25, rows.AbsErrorSum);
    }

    [Fact]
    public void TheConsecutiveGroupIndexChangesNothing()
    {
        var rng = new Random(3);
        var weights = Enumerable.Range(0, 3 * 10).Select(_ => (float)rng.NextDouble() * 4 - 2).ToArray();
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 4);
        var plain = QuantizedRows.RoundToNearest(MemoryMarshal.AsBytes(weights.AsSpan()), TensorDType.F32, 3, 10, scheme, "w");
        var values = new sbyte[30];
        var groups = new QuantParams[9];
        for (int r = 0; r < 3; r++)
        {
            for (int c = 0; c < 10; c++) values[r * 10 + c] = plain.Value(r, c);
            for (int g = 0; g < 3; g++) groups[r * 3 + g] = plain.Group(r, g);
        }

        var indexed = new QuantizedRows(scheme, TensorDType.F32, 3, 10, values, groups, weights, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);

        Assert.Equal(plain.DequantizedBytes(), indexed.DequantizedBytes());
        Assert.Equal(plain.AbsErrorSum, indexed.AbsErrorSum);
        Assert.Equal(plain.PackedBytes(), indexed.PackedBytes());
    }

    [Fact]
    public void ABadGroupIndexIsRefused()
    {
        float[] reference = [0, 0, 0, 0];
        var range = Assert.Throws<ArgumentException>(() => new QuantizedRows(Scheme, TensorDType.F32, 1, 4, Values, Groups, reference, [0, 2, 0, 1]));
        Assert.Contains("g_idx[1] = 2", range.Message);
        Assert.Equal("groupIndex", range.ParamName);
        Assert.Throws<ArgumentException>(() => new QuantizedRows(Scheme, TensorDType.F32, 1, 4, Values, Groups, reference, [0, -1, 0, 1]));
        Assert.Throws<ArgumentException>(() => new QuantizedRows(Scheme, TensorDType.F32, 1, 4, Values, Groups, reference, [0, 1, 0]));
        var channel = QuantScheme.Parse(QuantScheme.W8A16);
        var perChannel = Assert.Throws<ArgumentException>(() => new QuantizedRows(channel, TensorDType.F32, 1, 4, Values, [new(0.5f, 0)], reference, [0, 0, 0, 0]));
        Assert.Contains("W8A16", perChannel.Message);
    }
}
