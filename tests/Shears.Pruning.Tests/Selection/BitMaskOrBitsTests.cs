using Shears.Pruning.Masks;

namespace Shears.Pruning.Tests.Selection;

public class BitMaskOrBitsTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(100)]
    public void OrBitsSetsExactlyTheGivenElementsAtAnyAlignment(long start)
    {
        var random = new Random((int)start + 1);
        ulong bits = (ulong)random.NextInt64() | 1UL << 63 | 1;
        var mask = new BitMask(start + 64 + 7);
        mask.Set(start + 64 + 3); // an existing bit stays set
        mask.OrBits(start, bits);
        for (long i = 0; i < mask.Length; i++)
        {
            bool expected = (i >= start && i < start + 64 && (bits >> (int)(i - start) & 1) == 1) || i == start + 64 + 3;
            Assert.Equal(expected, mask[i]);
        }
    }

    [Fact]
    public void OrBitsRefusesBitsPastTheEnd()
    {
        var mask = new BitMask(70);
        mask.OrBits(6, 1UL << 63);           // element 69: the last one
        Assert.True(mask[69]);
        Assert.Throws<ArgumentOutOfRangeException>(() => mask.OrBits(7, 1UL << 63));
        mask.SetRange(3, 66);
        Assert.Equal(67, mask.CountSet()); // 3..68 plus 69
    }
}
