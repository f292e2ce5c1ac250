using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>What a shard persists of GPTQ's results comes back exactly, and a damaged or mismatched file is refused.</summary>
public class QuantizedRowsPersistenceTests
{
    private static QuantizedRows Random(QuantScheme scheme, int rows, int columns, int seed, bool groupIndex)
    {
        var random = new Random(seed);
        int groups = checked((int)scheme.GroupsPerRow(columns));
        var values = Enumerable.Range(0, rows * columns).Select(_ => (sbyte)random.Next(-8, 8)).ToArray();
        var parameters = Enumerable.Range(0, rows * groups).Select(_ => new QuantParams((float)random.NextDouble(), scheme.Symmetric ? 0 : random.Next(-8, 8))).ToArray();
        var reference = Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        int[]? index = groupIndex ? Enumerable.Range(0, columns).Select(_ => random.Next(groups)).ToArray() : null;
        return new QuantizedRows(scheme, TensorDType.BF16, rows, columns, values, parameters, reference, index);
    }

    private static QuantizedRows RoundTrip(QuantizedRows rows, QuantScheme scheme)
    {
        using var stream = new MemoryStream();
        rows.WriteTo(stream);
        stream.Position = 0;
        return QuantizedRows.ReadFrom(stream, scheme, TensorDType.BF16, "block");
    }

    [Theory]
    [InlineData(QuantScheme.W4A16, 16, false)]
    [InlineData(QuantScheme.W4A16Asym, 8, true)]
    [InlineData(QuantScheme.W8A16, 128, false)]
    public void ABlockComesBackExactly(string name, int groupSize, bool groupIndex)
    {
        var scheme = QuantScheme.Parse(name, groupSize);
        var rows = Random(scheme, 5, 36, 7, groupIndex);
        var back = RoundTrip(rows, scheme);

        Assert.Equal((rows.Rows, rows.Columns, rows.GroupsPerRow), (back.Rows, back.Columns, back.GroupsPerRow));
        Assert.Equal(rows.AbsErrorSum, back.AbsErrorSum);
        Assert.Equal(rows.MaxAbsError, back.MaxAbsError);
        Assert.Equal(rows.PackedBytes(), back.PackedBytes());
        Assert.Equal(rows.ScaleBytes(), back.ScaleBytes());
        Assert.Equal(rows.ZeroPoints(), back.ZeroPoints());
        Assert.Equal(rows.DequantizedBytes(), back.DequantizedBytes());
        Assert.Equal(rows.GroupIndexBytes(), back.GroupIndexBytes());
        Assert.Equal(rows.ZeroCount(), back.ZeroCount());
    }

    [Fact]
    public void ATruncatedFileOrAnotherSchemeIsRefusedNamingTheFile()
    {
        var scheme = QuantScheme.Parse(QuantScheme.W4A16, 16);
        var rows = Random(scheme, 3, 32, 9, groupIndex: true);
        using var stream = new MemoryStream();
        rows.WriteTo(stream);
        var bytes = stream.ToArray();

        var truncated = Assert.Throws<InvalidDataException>(() => QuantizedRows.ReadFrom(new MemoryStream(bytes[..^3]), scheme, TensorDType.BF16, "piece-00001.gptq"));
        Assert.Contains("piece-00001.gptq", truncated.Message);
        var longer = Assert.Throws<InvalidDataException>(() => QuantizedRows.ReadFrom(new MemoryStream([.. bytes, 0]), scheme, TensorDType.BF16, "f"));
        Assert.Contains("after the block", longer.Message);
        var other = Assert.Throws<InvalidDataException>(() => QuantizedRows.ReadFrom(new MemoryStream(bytes), QuantScheme.Parse(QuantScheme.W4A16, 8), TensorDType.BF16, "f"));
        Assert.Contains("does not fit", other.Message);
        var garbage = Assert.Throws<InvalidDataException>(() => QuantizedRows.ReadFrom(new MemoryStream(new byte[40]), scheme, TensorDType.BF16, "g"));
        Assert.Contains("not a block", garbage.Message);
    }
}
