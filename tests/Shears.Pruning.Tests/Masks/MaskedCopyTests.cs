using Shears.Pruning.Masks;

namespace Shears.Pruning.Tests.Masks;

public class MaskedCopyTests
{
    /// <summary>
    /// Against the element-by-element definition, for every element size: masks with empty, full and random words,
    /// lengths off the 64-element block and the vector width, −0.0 and zero elements left unmasked; bytes past the copy
    /// stay untouched.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void CopiesWithMaskedElementsZeroAndCountsTheRest(int size)
    {
        var random = new Random(size);
        foreach (int count in new[] { 0, 1, 63, 64, 65, 1000, 4096 + 37 })
        {
            var source = new byte[count * size];
            random.NextBytes(source);
            for (int i = 0; i < count; i++)
            {
                // Some zero elements, some with only the sign bit (−0.0 in a float dtype).
                if (random.Next(7) == 0) source.AsSpan(i * size, size).Clear();
                else if (random.Next(7) == 0) { source.AsSpan(i * size, size).Clear(); source[i * size + size - 1] = 0x80; }
            }
            var words = new ulong[(count + 63) / 64];
            for (int w = 0; w < words.Length; w++)
                words[w] = (w % 3) switch { 0 => 0, 1 => ulong.MaxValue, _ => (ulong)random.NextInt64() ^ (ulong)random.NextInt64() << 1 };
            if (count % 64 != 0 && words.Length > 0) words[^1] &= (1UL << (count % 64)) - 1;

            var expected = new byte[source.Length + 5];
            long expectedNonZero = 0;
            for (int i = 0; i < count; i++)
            {
                bool masked = (words[i / 64] >> (i % 64) & 1) != 0;
                if (!masked) source.AsSpan(i * size, size).CopyTo(expected.AsSpan(i * size));
                if (!masked && source.AsSpan(i * size, size).ContainsAnyExcept((byte)0)) expectedNonZero++;
            }
            expected.AsSpan(source.Length).Fill(0xAB);
            var actual = new byte[source.Length + 5];
            random.NextBytes(actual);
            actual.AsSpan(source.Length).Fill(0xAB);

            long nonZero = MaskedCopy.Copy(source, size, words, actual);
            Assert.Equal(expected, actual);
            Assert.Equal(expectedNonZero, nonZero);

            // In place: the same result in the source's own bytes.
            var inPlace = (byte[])source.Clone();
            Assert.Equal(expectedNonZero, MaskedCopy.Copy(inPlace, size, words, inPlace));
            Assert.Equal(expected.AsSpan(0, source.Length).ToArray(), inPlace);
        }
    }

    [Fact]
    public void RefusesWhatDoesNotFit()
    {
        Assert.Throws<ArgumentException>(() => MaskedCopy.Copy(new byte[6], 4, new ulong[1], new byte[8]));
        Assert.Throws<ArgumentException>(() => MaskedCopy.Copy(new byte[130], 2, new ulong[1], new byte[130]));
        Assert.Throws<ArgumentException>(() => MaskedCopy.Copy(new byte[8], 2, new ulong[1], new byte[6]));
    }

    [Fact]
    public void HandWorkedBF16()
    {
        // 1.0, −0.0, 2.0, 0.0 (bf16) with elements 0 and 3 masked: 0, −0.0, 2.0, 0 written, two non-zero.
        byte[] source = [0x80, 0x3F, 0x00, 0x80, 0x00, 0x40, 0x00, 0x00];
        var destination = new byte[8];
        Assert.Equal(2, MaskedCopy.Copy(source, 2, [0b1001UL], destination));
        Assert.Equal([0x00, 0x00, 0x00, 0x80, 0x00, 0x40, 0x00, 0x00], destination);
    }
}
