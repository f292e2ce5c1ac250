using System.Buffers.Binary;
using System.Numerics;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Size;

/// <summary>Element counts and sizes of one tensor or, summed with <see cref="Add"/>, of many.</summary>
/// <param name="ZeroElements">Elements whose bytes are all zero (+0.0; −0.0 is not zero, see <see cref="SparseEncoding"/>).</param>
/// <param name="DenseBytes">Bytes of the tensor as stored densely.</param>
/// <param name="SparseBytes">Bytes of the tensor as written by <see cref="SparseEncoding.Write"/>.</param>
public sealed record SizeReport(long Elements, long ZeroElements, long DenseBytes, long SparseBytes)
{
    public static SizeReport Empty { get; } = new(0, 0, 0, 0);

    /// <summary>Zero elements / elements; 0 for an empty tensor.</summary>
    public double Sparsity => Elements == 0 ? 0 : (double)ZeroElements / Elements;

    public SizeReport Add(SizeReport other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(Elements + other.Elements, ZeroElements + other.ZeroElements,
            DenseBytes + other.DenseBytes, SparseBytes + other.SparseBytes);
    }
}

/// <summary>
/// A sparse encoding of one tensor: [u64 little-endian element count][one bit per element, set when the
/// element is non-zero, packed little-endian (element i is bit i % 8 of byte i / 8), padded with zero
/// bits to a whole byte][the non-zero elements' bytes in their own dtype, in order].
/// </summary>
/// <remarks>
/// "Zero" means all bytes zero, i.e. +0.0 for floats (what Shears writes for masked weights). −0.0 has
/// its sign bit set, so it is kept as a value: the round trip restores every byte exactly.
/// Size: 8 + ceil(n / 8) + non-zeros × element size.
/// </remarks>
public static class SparseEncoding
{
    private const int Chunk = 1 << 16;

    /// <summary>Writes <paramref name="raw"/> in the sparse encoding and returns the number of bytes written.</summary>
    public static long Write(Stream output, ReadOnlySpan<byte> raw, TensorDType dtype)
    {
        ArgumentNullException.ThrowIfNull(output);
        int size = dtype.ElementSize();
        long n = ElementCount(raw, dtype);

        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)n);
        output.Write(header);
        long written = 8;

        // Two passes over the tensor keep memory bounded by the chunk, whatever the tensor's size.
        var buffer = new byte[Chunk];
        int fill = 0;
        for (long start = 0; start < n; start += 8)
        {
            byte bits = 0;
            for (int b = 0; b < 8 && start + b < n; b++)
                if (!IsZero(raw.Slice((int)((start + b) * size), size))) bits |= (byte)(1 << b);
            buffer[fill++] = bits;
            if (fill == buffer.Length) { output.Write(buffer, 0, fill); written += fill; fill = 0; }
        }
        if (fill > 0) { output.Write(buffer, 0, fill); written += fill; fill = 0; }

        for (long i = 0; i < n; i++)
        {
            var element = raw.Slice((int)(i * size), size);
            if (IsZero(element)) continue;
            if (fill + size > buffer.Length) { output.Write(buffer, 0, fill); written += fill; fill = 0; }
            element.CopyTo(buffer.AsSpan(fill));
            fill += size;
        }
        if (fill > 0) { output.Write(buffer, 0, fill); written += fill; }
        return written;
    }

    /// <summary>Reads one tensor written by <see cref="Write"/> and returns its dense bytes, exactly as written.</summary>
    /// <exception cref="InvalidDataException">The encoding is malformed.</exception>
    /// <exception cref="EndOfStreamException">The stream ends inside the encoding.</exception>
    public static byte[] Read(Stream input, TensorDType dtype)
    {
        ArgumentNullException.ThrowIfNull(input);
        int size = dtype.ElementSize();
        Span<byte> header = stackalloc byte[8];
        input.ReadExactly(header);
        ulong count = BinaryPrimitives.ReadUInt64LittleEndian(header);
        if (count > (ulong)(Array.MaxLength / size))
            throw new InvalidDataException($"sparse {dtype} tensor claims {count} elements, more than one array can hold");
        long n = (long)count;

        var bits = new byte[(n + 7) / 8];
        input.ReadExactly(bits);
        if (n % 8 != 0 && bits[^1] >> (int)(n % 8) != 0)
            throw new InvalidDataException($"sparse {dtype} tensor of {n} elements has bits set in the padding of its bitmask");

        long valueBytes = 0;
        foreach (byte b in bits) valueBytes += BitOperations.PopCount(b);
        valueBytes *= size;

        var dense = new byte[n * size];
        var buffer = new byte[Chunk - Chunk % size];
        int have = 0, next = 0;
        for (long i = 0; i < n; i++)
        {
            if ((bits[i >> 3] & (1 << (int)(i & 7))) == 0) continue;
            if (next == have)
            {
                // Read no further than the values left, so the stream stays positioned after this tensor.
                have = (int)Math.Min(buffer.Length, valueBytes);
                input.ReadExactly(buffer, 0, have);
                valueBytes -= have;
                next = 0;
            }
            buffer.AsSpan(next, size).CopyTo(dense.AsSpan((int)(i * size)));
            next += size;
        }
        return dense;
    }

    /// <summary>Counts, sizes and the real encoded size (by encoding into a <see cref="CountingStream"/>).</summary>
    public static SizeReport Measure(ReadOnlySpan<byte> raw, TensorDType dtype)
    {
        int size = dtype.ElementSize();
        long n = ElementCount(raw, dtype);
        long zeros = 0;
        for (long i = 0; i < n; i++)
            if (IsZero(raw.Slice((int)(i * size), size))) zeros++;
        using var counter = new CountingStream();
        long written = Write(counter, raw, dtype);
        if (written != counter.Length)
            throw new InvalidOperationException($"the encoder reported {written} bytes but wrote {counter.Length}");
        return new SizeReport(n, zeros, raw.Length, counter.Length);
    }

    private static long ElementCount(ReadOnlySpan<byte> raw, TensorDType dtype)
    {
        int size = dtype.ElementSize();
        if (raw.Length % size != 0)
            throw new ArgumentException($"{raw.Length} bytes are not a whole number of {dtype} elements ({size} bytes each)", nameof(raw));
        return raw.Length / size;
    }

    private static bool IsZero(ReadOnlySpan<byte> element) => element.Length switch
    {
        1 => element[0] == 0,
        2 => BinaryPrimitives.ReadUInt16LittleEndian(element) == 0,
        4 => BinaryPrimitives.ReadUInt32LittleEndian(element) == 0,
        8 => BinaryPrimitives.ReadUInt64LittleEndian(element) == 0,
        _ => !element.ContainsAnyExcept((byte)0),
    };
}

/// <summary>A write-only stream that keeps nothing and counts the bytes written to it.</summary>
public sealed class CountingStream : Stream
{
    private long _count;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _count;

    public override long Position
    {
        get => _count;
        set => throw new NotSupportedException("a counting stream cannot seek");
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        _count += count;
    }

    public override void Write(ReadOnlySpan<byte> buffer) => _count += buffer.Length;

    public override void WriteByte(byte value) => _count++;

    public override void Flush() { }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("a counting stream cannot be read");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("a counting stream cannot seek");

    public override void SetLength(long value) => throw new NotSupportedException("a counting stream cannot change length");
}
