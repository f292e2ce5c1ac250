using Shears.Pruning.Masks;

namespace Shears.Pruning.Tests.Masks;

/// <summary>The packed bytes a shard persists each round, and reading them back.</summary>
public class BitMaskBytesTests
{
    [Fact]
    public void BytesPackElementIIntoBitIMod8OfByteIDiv8()
    {
        var mask = new BitMask(10);
        mask.Set(0);
        mask.Set(3);
        mask.Set(9);
        Assert.Equal(new byte[] { 0b0000_1001, 0b0000_0010 }, mask.Bytes.ToArray());
        // A view, not a copy: it follows the mask.
        var view = mask.Bytes;
        mask.Set(1);
        Assert.Equal(0b0000_1011, view[0]);

        var back = BitMask.FromBytes(mask.Bytes, 10);
        Assert.Equal(4, back.CountSet());
        Assert.True(back.SequenceEqual(mask));
        Assert.Throws<ArgumentException>(() => BitMask.FromBytes(new byte[3], 10));
        Assert.Throws<ArgumentException>(() => BitMask.FromBytes(new byte[] { 0, 0b0000_0100 }, 10)); // bit 10 is past the end
    }

    [Fact]
    public void RandomMasksRoundTripAtEveryLengthAroundAWord()
    {
        var random = new Random(5);
        foreach (long length in new long[] { 0, 1, 63, 64, 65, 127, 1000 })
        {
            var mask = new BitMask(length);
            for (long i = 0; i < length; i++) if (random.Next(3) == 0) mask.Set(i);
            Assert.Equal((length + 7) / 8, mask.Bytes.Length);
            Assert.True(BitMask.FromBytes(mask.Bytes, length).SequenceEqual(mask), $"length {length}");
        }
    }
}
