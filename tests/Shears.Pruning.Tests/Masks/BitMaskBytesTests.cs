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

public class BitMaskCountTests
{
    /// <summary>The count is kept between changes: every way of setting (or clearing) a bit must be seen by the next count.</summary>
    [Fact]
    public void TheKeptCountFollowsEveryChange()
    {
        var random = new Random(5);
        var mask = new BitMask(1000);
        var reference = new bool[1000];
        long Expected() => reference.LongCount(b => b);
        Assert.Equal(0, mask.CountSet());
        for (int step = 0; step < 400; step++)
        {
            int at = random.Next(1000);
            switch (step % 5)
            {
                case 0: mask.Set(at); reference[at] = true; break;
                case 1: mask[at] = true; reference[at] = true; break;
                case 2: mask[at] = false; reference[at] = false; break;
                case 3:
                    int start = Math.Min(at, 1000 - 64);
                    ulong bits = (ulong)random.NextInt64() | 1;
                    mask.OrBits(start, bits);
                    for (int j = 0; j < 64; j++) if ((bits >> j & 1) != 0) reference[start + j] = true;
                    break;
                default:
                    int count = random.Next(Math.Min(200, 1000 - at) + 1);
                    mask.SetRange(at, count);
                    for (int j = 0; j < count; j++) reference[at + j] = true;
                    break;
            }
            Assert.Equal(Expected(), mask.CountSet());
            Assert.Equal(Expected(), mask.CountSet()); // asked twice: the kept value
        }
        Assert.Equal(Expected(), mask.Clone().CountSet());
        Assert.Equal(Expected(), BitMask.FromBytes(mask.Bytes, 1000).CountSet());
    }
}
