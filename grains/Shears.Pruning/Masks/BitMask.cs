using System.Numerics;

namespace Shears.Pruning.Masks;

/// <summary>
/// One bit per element, row-major; a set bit means the element is masked (pruned to zero).
/// Masks are cumulative across rounds: bits are only ever set, never cleared.
/// </summary>
public sealed class BitMask
{
    private readonly ulong[] _words;

    // Set bits, counted on first need after the last change (-1: not known). Shards ask for the count several times a
    // round (kept statistics check it, results report it); a count reads the whole mask.
    private long _count = -1;

    public BitMask(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        // Written once now (the allocation leaves it unwritten): a fresh large array's pages are not yet the process's own,
        // and a mask is usually read (every histogram reads it) before its first bit is set, which would map the shared
        // zero page and then copy it on that write, with a TLB flush on every core per page.
        _words = GC.AllocateUninitializedArray<ulong>(WordCount(length));
        _words.AsSpan().Clear();
    }

    private static int WordCount(long length) => checked((int)((length + 63) / 64));

    private BitMask(long length, ulong[] words)
    {
        Length = length;
        _words = words;
    }

    public long Length { get; }

    /// <summary>The packed words; bits past <see cref="Length"/> are always zero.</summary>
    public ReadOnlySpan<ulong> Words => _words;

    public bool this[long index]
    {
        get => (_words[index >> 6] & (1UL << (int)(index & 63))) != 0;
        set
        {
            if (value) _words[index >> 6] |= 1UL << (int)(index & 63);
            else _words[index >> 6] &= ~(1UL << (int)(index & 63));
            _count = -1;
        }
    }

    public void Set(long index)
    {
        _words[index >> 6] |= 1UL << (int)(index & 63);
        _count = -1;
    }

    /// <summary>ORs 64 bits into the mask starting at element <paramref name="start"/> (any alignment): bit j of <paramref name="bits"/> sets element start + j.</summary>
    public void OrBits(long start, ulong bits)
    {
        if (bits == 0) return;
        if (start < 0 || start + (64 - BitOperations.LeadingZeroCount(bits)) > Length)
            throw new ArgumentOutOfRangeException(nameof(start), $"bits past the mask's {Length} elements");
        long word = start >> 6;
        int shift = (int)(start & 63);
        _count = -1;
        _words[word] |= bits << shift;
        if (shift != 0 && bits >> (64 - shift) != 0) _words[word + 1] |= bits >> (64 - shift);
    }

    /// <summary>Sets bits [start, start + count).</summary>
    public void SetRange(long start, long count)
    {
        for (long i = start, end = start + count; i < end; i += 64)
        {
            int n = (int)Math.Min(64, end - i);
            OrBits(i, n == 64 ? ulong.MaxValue : (1UL << n) - 1);
        }
    }

    public long CountSet()
    {
        if (_count >= 0) return _count;
        long n = 0;
        foreach (ulong w in _words) n += BitOperations.PopCount(w);
        return _count = n;
    }

    public BitMask Clone() => new(Length, (ulong[])_words.Clone());

    /// <summary>
    /// The little-endian packed bytes (element i is bit i % 8 of byte i / 8), without a copy: valid while the mask lives,
    /// changing with it.
    /// </summary>
    public ReadOnlySpan<byte> Bytes
    {
        get
        {
            // The words are little-endian in memory: their first (Length + 7) / 8 bytes are the packed mask.
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("masks are packed little-endian");
            return System.Runtime.InteropServices.MemoryMarshal.AsBytes(_words.AsSpan())[..(int)((Length + 7) / 8)];
        }
    }

    public static BitMask FromBytes(ReadOnlySpan<byte> bytes, long length)
    {
        if (bytes.Length != (length + 7) / 8)
            throw new ArgumentException($"a mask of {length} elements takes {(length + 7) / 8} bytes, got {bytes.Length}", nameof(bytes));
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        // Every word is written here, by the copy or the clear of its tail: no need to clear them first.
        var mask = new BitMask(length, GC.AllocateUninitializedArray<ulong>(WordCount(length)));
        var target = System.Runtime.InteropServices.MemoryMarshal.AsBytes(mask._words.AsSpan());
        bytes.CopyTo(target);
        target[bytes.Length..].Clear();
        if (length % 8 != 0 && (bytes[^1] >> (int)(length % 8)) != 0)
            throw new ArgumentException("mask bytes have bits set past the mask's length", nameof(bytes));
        return mask;
    }

    public static BitMask FromBools(ReadOnlySpan<bool> masked)
    {
        var mask = new BitMask(masked.Length);
        for (int i = 0; i < masked.Length; i++) if (masked[i]) mask.Set(i);
        return mask;
    }

    public bool[] ToBools()
    {
        var result = new bool[Length];
        for (long i = 0; i < Length; i++) result[i] = this[i];
        return result;
    }

    public bool SequenceEqual(BitMask other) =>
        Length == other.Length && _words.AsSpan().SequenceEqual(other._words);

    /// <summary>The mask of the transposed matrix: element (r, c) of a row-major [rows, cols] mask becomes (c, r) of [cols, rows].</summary>
    public BitMask Transposed(long rows, long cols)
    {
        if (rows * cols != Length) throw new ArgumentException($"a mask of {Length} elements is not [{rows}, {cols}]");
        var result = new BitMask(Length);
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++)
                if (this[r * cols + c]) result.Set(c * rows + r);
        return result;
    }
}
