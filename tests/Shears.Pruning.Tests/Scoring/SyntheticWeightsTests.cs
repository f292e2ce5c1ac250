using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;

namespace Shears.Pruning.Tests.Scoring;

public class SyntheticWeightsTests
{
    [Fact]
    public void ElementsFollowTheDocumentedBitLayout()
    {
        // r = 0: mantissa 0, ten trailing zeros (capped) lower the exponent from 121 to 111, sign +.
        Assert.Equal(0x3780, SyntheticWeights.Element(0));
        // Top bit set (sign −), mantissa 0b0000101, bit 7 set: no trailing zero, exponent 121 = 2^-6.
        ushort bits = SyntheticWeights.Element(0x8000_0000_0000_0085);
        Assert.Equal(0xBC85, bits);
        Assert.Equal(-0.015625f * (1 + 5 / 128f), BitConverter.UInt32BitsToSingle((uint)bits << 16));
        // Three trailing zeros above the mantissa: exponent 118.
        Assert.Equal((118 << 7) | 0x7F, SyntheticWeights.Element(0x7F | (0b1000UL << 7)));
    }

    [Fact]
    public void KeysEqualTheMagnitudeKeysOfTheGeneratedBytesAtAnyOffsetAndSplit()
    {
        var random = new Random(3);
        for (int trial = 0; trial < 20; trial++)
        {
            long seed = random.NextInt64(), offset = random.NextInt64(0, 1L << 40);
            string name = $"model.layers.{trial}.mlp.up_proj.weight";
            int n = random.Next(1, 5000);
            var bytes = new byte[2 * n];
            SyntheticWeights.Bytes(seed, name, offset, bytes);
            var expected = new uint[n];
            ScoreKeys.Magnitude(bytes, TensorDType.BF16, expected, name, offset);
            var keys = new uint[n];
            int split = random.Next(0, n + 1);
            SyntheticWeights.MagnitudeKeys(seed, name, offset, keys.AsSpan(0, split));
            SyntheticWeights.MagnitudeKeys(seed, name, offset + split, keys.AsSpan(split));
            Assert.Equal(expected, keys);
            var values = new ushort[n];
            SyntheticWeights.Bf16(seed, name, offset, values);
            Assert.Equal(bytes, values.SelectMany(BitConverter.GetBytes).ToArray());
        }
    }

    [Fact]
    public void TensorsAndSeedsGetDifferentWeightsWithTiesAndGeometricMagnitudes()
    {
        var a = new ushort[1 << 16];
        var b = new ushort[1 << 16];
        var c = new ushort[1 << 16];
        SyntheticWeights.Bf16(1, "q", 0, a);
        SyntheticWeights.Bf16(1, "k", 0, b);
        SyntheticWeights.Bf16(2, "q", 0, c);
        Assert.True(a.Zip(b).Count(p => p.First == p.Second) < a.Length / 100);
        Assert.True(a.Zip(c).Count(p => p.First == p.Second) < a.Length / 100);
        // At most 11 exponents × 128 mantissas × 2 signs: ties everywhere.
        Assert.InRange(a.Distinct().Count(), 1000, 2 * 11 * 128);
        // About half the elements have the top exponent, a quarter the next.
        double top = a.Count(v => ((v >> 7) & 0xFF) == 121) / (double)a.Length, next = a.Count(v => ((v >> 7) & 0xFF) == 120) / (double)a.Length;
        Assert.InRange(top, 0.47, 0.53);
        Assert.InRange(next, 0.22, 0.28);
    }
}
