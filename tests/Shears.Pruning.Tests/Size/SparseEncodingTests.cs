using Shears.Pruning.Checkpoints;
using Shears.Pruning.Size;

namespace Shears.Pruning.Tests.Size;

public class SparseEncodingTests
{
    public static TheoryData<TensorDType> AllDtypes()
    {
        var data = new TheoryData<TensorDType>();
        foreach (var d in Enum.GetValues<TensorDType>()) data.Add(d);
        return data;
    }

    [Fact]
    public void WorkedEncoding()
    {
        // [0, 1.5, -0.0, 0, 2]: bits 0b10110, three values; 8 + 1 + 3 × 4 = 21 bytes.
        float[] values = [0, 1.5f, -0f, 0, 2];
        var raw = values.SelectMany(BitConverter.GetBytes).ToArray();
        using var stream = new MemoryStream();
        Assert.Equal(21, SparseEncoding.Write(stream, raw, TensorDType.F32));
        byte[] expected =
        [
            5, 0, 0, 0, 0, 0, 0, 0,
            0b10110,
            .. BitConverter.GetBytes(1.5f), .. BitConverter.GetBytes(-0f), .. BitConverter.GetBytes(2f),
        ];
        Assert.Equal(expected, stream.ToArray());
        stream.Position = 0;
        Assert.Equal(raw, SparseEncoding.Read(stream, TensorDType.F32));

        var report = SparseEncoding.Measure(raw, TensorDType.F32);
        Assert.Equal(new SizeReport(5, 2, 20, 21), report);
        Assert.Equal(0.4, report.Sparsity);
    }

    [Theory, MemberData(nameof(AllDtypes))]
    public void RoundTripIsByteExact(TensorDType dtype)
    {
        int size = dtype.ElementSize();
        var rng = new Random((int)dtype + 100);
        foreach (int n in new[] { 0, 1, 7, 8, 9, 63, 64, 65, 257, 1000, 4096 + 13, 3 * 4096 })
        {
            var raw = new byte[n * size];
            rng.NextBytes(raw);
            long nnz = n;
            for (int i = 0; i < n; i++)
            {
                var element = raw.AsSpan(i * size, size);
                int kind = rng.Next(5);
                if (kind <= 1) element.Clear();                          // +0.0
                else if (kind == 2) { element.Clear(); element[^1] = 0x80; } // -0.0: sign bit only
                if (!element.ContainsAnyExcept((byte)0)) nnz--;
            }

            using var stream = new MemoryStream();
            long written = SparseEncoding.Write(stream, raw, dtype);
            long formula = 8 + (n + 7) / 8 + nnz * size;
            Assert.Equal(formula, written);
            Assert.Equal(formula, stream.Length);

            var report = SparseEncoding.Measure(raw, dtype);
            Assert.Equal(new SizeReport(n, n - nnz, raw.Length, formula), report);
            // Counting without encoding (the report from a zero count, as shards make it) agrees with the encoding.
            Assert.Equal(report, SparseEncoding.Count(raw, dtype));

            stream.Position = 0;
            Assert.Equal(raw, SparseEncoding.Read(stream, dtype));
            Assert.Equal(stream.Length, stream.Position);
        }
    }

    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.BF16)]
    [InlineData(TensorDType.F64)]
    public void TensorsLargerThanTheBufferRoundTripBackToBack(TensorDType dtype)
    {
        int size = dtype.ElementSize();
        var rng = new Random(3);
        var a = new byte[70_001 * size];
        rng.NextBytes(a);
        for (int i = 0; i < a.Length; i += size * 3) a.AsSpan(i, size).Clear();
        var b = new byte[5 * size];
        rng.NextBytes(b);

        using var stream = new MemoryStream();
        long first = SparseEncoding.Write(stream, a, dtype);
        long second = SparseEncoding.Write(stream, b, dtype);
        Assert.Equal(stream.Length, first + second);
        Assert.Equal(SparseEncoding.Measure(a, dtype).SparseBytes, first);

        stream.Position = 0;
        Assert.Equal(a, SparseEncoding.Read(stream, dtype));
        Assert.Equal(first, stream.Position);
        Assert.Equal(b, SparseEncoding.Read(stream, dtype));
    }

    [Fact]
    public void AllZeroIsFullySparseAndDenseIsNot()
    {
        var zeros = SparseEncoding.Measure(new byte[4 * 100], TensorDType.F32);
        Assert.Equal(1.0, zeros.Sparsity);
        Assert.Equal(100, zeros.ZeroElements);
        Assert.Equal(8 + 13, zeros.SparseBytes);

        var ones = Enumerable.Repeat(BitConverter.GetBytes((Half)1), 100).SelectMany(x => x).ToArray();
        var dense = SparseEncoding.Measure(ones, TensorDType.F16);
        Assert.Equal(0.0, dense.Sparsity);
        Assert.Equal(0, dense.ZeroElements);
        Assert.Equal(8 + 13 + 200, dense.SparseBytes);

        var negativeZeros = Enumerable.Repeat(new byte[] { 0x00, 0x80 }, 10).SelectMany(x => x).ToArray();
        Assert.Equal(0.0, SparseEncoding.Measure(negativeZeros, TensorDType.BF16).Sparsity);

        Assert.Equal(0.0, SparseEncoding.Measure([], TensorDType.F32).Sparsity);
    }

    [Fact]
    public void ReportsAdd()
    {
        var sum = new SizeReport(10, 4, 40, 30).Add(new SizeReport(6, 6, 12, 9));
        Assert.Equal(new SizeReport(16, 10, 52, 39), sum);
        Assert.Equal(10.0 / 16, sum.Sparsity);
        Assert.Equal(sum, SizeReport.Empty.Add(sum));
    }

    [Fact]
    public void MalformedInputIsRejected()
    {
        Assert.Throws<ArgumentException>(() => SparseEncoding.Write(new MemoryStream(), new byte[7], TensorDType.F32));
        Assert.Throws<ArgumentException>(() => SparseEncoding.Measure(new byte[3], TensorDType.BF16));

        using var stream = new MemoryStream();
        SparseEncoding.Write(stream, [1, 0, 2, 0, 3, 0], TensorDType.BF16); // 3 elements, bits 0b111
        var good = stream.ToArray();

        var padding = (byte[])good.Clone();
        padding[8] |= 0b1000;
        Assert.Throws<InvalidDataException>(() => SparseEncoding.Read(new MemoryStream(padding), TensorDType.BF16));

        Assert.Throws<EndOfStreamException>(() => SparseEncoding.Read(new MemoryStream(good[..^1]), TensorDType.BF16));
        Assert.Throws<EndOfStreamException>(() => SparseEncoding.Read(new MemoryStream(good[..5]), TensorDType.BF16));

        var huge = (byte[])good.Clone();
        BitConverter.TryWriteBytes(huge.AsSpan(0, 8), ulong.MaxValue);
        Assert.Throws<InvalidDataException>(() => SparseEncoding.Read(new MemoryStream(huge), TensorDType.BF16));
    }

    [Fact]
    public void CountingStreamCounts()
    {
        using var counter = new CountingStream();
        counter.Write([1, 2, 3], 1, 2);
        counter.Write(new byte[10]);
        counter.WriteByte(7);
        Assert.Equal(13, counter.Length);
        Assert.Equal(13, counter.Position);
        Assert.False(counter.CanRead);
        Assert.Throws<NotSupportedException>(() => counter.Seek(0, SeekOrigin.Begin));
    }
}
