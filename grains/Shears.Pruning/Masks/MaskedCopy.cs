using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Shears.Pruning.Masks;

/// <summary>Writes weights with their masked elements as zero, as an export does, counting what stays non-zero.</summary>
public static class MaskedCopy
{
    /// <summary>
    /// Copies the elements of <paramref name="source"/> (<paramref name="elementSize"/> bytes each) into
    /// <paramref name="destination"/> with every masked one (bit i of <paramref name="words"/> set for element i) written
    /// as zero bytes, and returns how many elements written hold a non-zero byte (−0.0 counts as non-zero). The two may
    /// be the same bytes (masking in place); otherwise they must not overlap.
    /// </summary>
    public static long Copy(ReadOnlySpan<byte> source, int elementSize, ReadOnlySpan<ulong> words, Span<byte> destination)
    {
        if (elementSize <= 0 || source.Length % elementSize != 0)
            throw new ArgumentException($"{source.Length} bytes are not whole elements of {elementSize} bytes", nameof(source));
        int count = source.Length / elementSize;
        if (words.Length * 64L < count)
            throw new ArgumentException($"{words.Length} mask words cover {words.Length * 64L} elements, not {count}", nameof(words));
        if (destination.Length < source.Length)
            throw new ArgumentException($"the destination holds {destination.Length} bytes, the copy needs {source.Length}", nameof(destination));
        return elementSize switch
        {
            2 => Copy<ushort>(MemoryMarshal.Cast<byte, ushort>(source), words, MemoryMarshal.Cast<byte, ushort>(destination)),
            4 => Copy<uint>(MemoryMarshal.Cast<byte, uint>(source), words, MemoryMarshal.Cast<byte, uint>(destination)),
            _ => CopyAnySize(source, elementSize, words, destination),
        };
    }

    /// <summary>
    /// Per vector of lanes, the mask word's bits for those lanes are spread over the lanes and compared: no element is
    /// handled alone, whatever the pattern of the mask.
    /// </summary>
    private static long Copy<T>(ReadOnlySpan<T> source, ReadOnlySpan<ulong> words, Span<T> destination)
        where T : unmanaged, IBinaryInteger<T>, IUnsignedNumber<T>
    {
        int n = source.Length, i = 0;
        long zeros = 0;
        int lanes = Vector256<T>.Count;
        if (Vector256.IsHardwareAccelerated && 64 % lanes == 0)
        {
            Span<T> bitOfLane = stackalloc T[lanes];
            for (int l = 0; l < lanes; l++) bitOfLane[l] = T.One << l;
            var laneBits = Vector256.Create((ReadOnlySpan<T>)bitOfLane);
            ulong laneMask = (1UL << lanes) - 1;
            ref T from = ref MemoryMarshal.GetReference(source);
            ref T to = ref MemoryMarshal.GetReference(destination);
            for (; i + 64 <= n; i += 64)
            {
                ulong word = words[i / 64];
                for (int j = 0; j < 64; j += lanes)
                {
                    var masked = Vector256.Create(T.CreateTruncating((word >> j) & laneMask)) & laneBits;
                    var kept = Vector256.LoadUnsafe(ref from, (nuint)(i + j)) & Vector256.Equals(masked, Vector256<T>.Zero);
                    kept.StoreUnsafe(ref to, (nuint)(i + j));
                    zeros += BitOperations.PopCount(Vector256.Equals(kept, Vector256<T>.Zero).ExtractMostSignificantBits());
                }
            }
        }
        for (; i < n; i++)
        {
            T value = (words[i / 64] >> (i % 64) & 1) != 0 ? T.Zero : source[i];
            destination[i] = value;
            if (value == T.Zero) zeros++;
        }
        return n - zeros;
    }

    private static long CopyAnySize(ReadOnlySpan<byte> source, int size, ReadOnlySpan<ulong> words, Span<byte> destination)
    {
        long nonZero = 0;
        for (int i = 0; i < source.Length / size; i++)
        {
            var to = destination.Slice(i * size, size);
            if ((words[i / 64] >> (i % 64) & 1) != 0) to.Clear();
            else
            {
                source.Slice(i * size, size).CopyTo(to);
                if (to.ContainsAnyExcept((byte)0)) nonZero++;
            }
        }
        return nonZero;
    }
}
