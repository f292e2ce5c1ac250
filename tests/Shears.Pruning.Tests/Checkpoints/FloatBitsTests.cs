using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Tests.Checkpoints;

public class FloatBitsTests
{
    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(-2.0f, 0xC000)]
    [InlineData(0.0f, 0x0000)]
    [InlineData(-0.0f, 0x8000)]
    [InlineData(float.PositiveInfinity, 0x7F80)]
    [InlineData(float.NegativeInfinity, 0xFF80)]
    [InlineData(float.MaxValue, 0x7F80)] // rounds up past the largest bf16
    public void SingleToBFloat16KnownValues(float value, int bits) =>
        Assert.Equal((ushort)bits, FloatBits.SingleToBFloat16(value));

    [Theory]
    [InlineData(0x3F808000u, 0x3F80)] // exactly halfway, even below: down
    [InlineData(0x3F818000u, 0x3F82)] // exactly halfway, odd below: up to even
    [InlineData(0x3F808001u, 0x3F81)] // just above halfway: up
    [InlineData(0x3F807FFFu, 0x3F80)] // just below halfway: down
    [InlineData(0x7F7F8000u, 0x7F80)] // halfway to overflow, odd below: infinity
    public void SingleToBFloat16RoundsToNearestEven(uint single, int bits) =>
        Assert.Equal((ushort)bits, FloatBits.SingleToBFloat16(BitConverter.UInt32BitsToSingle(single)));

    [Fact]
    public void NaNStaysNaN()
    {
        Assert.True(float.IsNaN(FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(float.NaN))));
        // A NaN whose payload sits only in the low bits would truncate to infinity.
        var lowPayloadNaN = BitConverter.UInt32BitsToSingle(0xFF800001u);
        var bits = FloatBits.SingleToBFloat16(lowPayloadNaN);
        Assert.True(float.IsNaN(FloatBits.BFloat16ToSingle(bits)));
        Assert.Equal(0x8000, bits & 0x8000);
        Assert.True(float.IsNaN(FloatBits.HalfToSingle(FloatBits.SingleToHalf(float.NaN))));
    }

    [Fact]
    public void EverySixteenBitValueRoundTrips()
    {
        for (var i = 0; i <= ushort.MaxValue; i++)
        {
            var bits = (ushort)i;
            var bf16 = FloatBits.BFloat16ToSingle(bits);
            Assert.Equal(BitConverter.SingleToUInt32Bits(bf16) >> 16, bits);
            if (!float.IsNaN(bf16))
            {
                Assert.Equal(bits, FloatBits.SingleToBFloat16(bf16));
            }
            var half = FloatBits.HalfToSingle(bits);
            if (!float.IsNaN(half))
            {
                Assert.Equal(bits, FloatBits.SingleToHalf(half));
            }
        }
    }

    [Theory]
    [InlineData(1.0f, 0x3C00)]
    [InlineData(-2.0f, 0xC000)]
    [InlineData(65504f, 0x7BFF)]  // largest fp16
    [InlineData(65520f, 0x7C00)]  // halfway to the next: ties to even, which is infinity
    [InlineData(2049f, 0x6800)]   // halfway between 2048 and 2050: to 2048 (even)
    [InlineData(2051f, 0x6802)]   // halfway between 2050 and 2052: to 2052 (even)
    [InlineData(5.960464477539063e-8f, 0x0001)] // smallest subnormal
    public void SingleToHalfKnownValues(float value, int bits) =>
        Assert.Equal((ushort)bits, FloatBits.SingleToHalf(value));

    /// <summary>Storing a span gives each element's own conversion, little-endian, for every dtype it takes.</summary>
    [Theory]
    [InlineData(TensorDType.F32)]
    [InlineData(TensorDType.BF16)]
    [InlineData(TensorDType.F16)]
    public void StoreWritesEachElementsConversion(TensorDType dtype)
    {
        var random = new Random((int)dtype);
        float[] values = [.. Enumerable.Range(0, 257).Select(i => i switch
        {
            0 => float.NaN, 1 => float.NegativeInfinity, 2 => -0f, 3 => BitConverter.UInt32BitsToSingle(0x3F818000), 4 => 70000f, 5 => 1e-8f,
            _ => (float)(random.NextDouble() * 2 - 1) * MathF.Pow(2, random.Next(-20, 20)),
        })];
        var raw = new byte[values.Length * dtype.ElementSize()];
        FloatBits.Store(values, dtype, raw);
        for (int i = 0; i < values.Length; i++)
        {
            byte[] expected = dtype switch
            {
                TensorDType.F32 => BitConverter.GetBytes(values[i]),
                TensorDType.BF16 => BitConverter.GetBytes(FloatBits.SingleToBFloat16(values[i])),
                _ => BitConverter.GetBytes(FloatBits.SingleToHalf(values[i])),
            };
            Assert.Equal(expected, raw.AsSpan(i * expected.Length, expected.Length).ToArray());
        }
        Assert.Throws<ArgumentException>(() => FloatBits.Store(values, dtype, new byte[raw.Length - 1]));
        Assert.Throws<NotSupportedException>(() => FloatBits.Store(values, TensorDType.I16, new byte[values.Length * 2]));
    }
}
