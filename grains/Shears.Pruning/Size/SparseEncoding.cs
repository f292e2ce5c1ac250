using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.Intrinsics;
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
        return Encode(output, raw, dtype, out _);
    }

    /// <summary>
    /// The encoding in two passes over the tensor (bitmask, then values), memory bounded by the chunk;
    /// <paramref name="nonZero"/> counts the elements written as values.
    /// </summary>
    private static long Encode(Stream output, ReadOnlySpan<byte> raw, TensorDType dtype, out long nonZero)
    {
        int size = dtype.ElementSize();
        long n = ElementCount(raw, dtype);

        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)n);
        output.Write(header);
        long written = 8;

        var buffer = new byte[Chunk];
        nonZero = 0;
        for (long start = 0; start < n; start += (long)Chunk * 8)
        {
            int count = (int)Math.Min((long)Chunk * 8, n - start);
            int bytes = (count + 7) / 8;
            var bits = buffer.AsSpan(0, bytes);
            NonZeroBits(raw.Slice((int)(start * size), count * size), size, bits);
            foreach (byte b in bits) nonZero += BitOperations.PopCount(b);
            output.Write(bits);
            written += bytes;
        }

        if (size == 2) return written + WriteNonZero<ushort>(output, raw, buffer);
        if (size == 4) return written + WriteNonZero<uint>(output, raw, buffer);
        int fill = 0;
        int capacity = buffer.Length - buffer.Length % size;
        for (long i = 0; i < n; i++)
        {
            var element = raw.Slice((int)(i * size), size);
            if (IsZero(element)) continue;
            if (fill + size > capacity) { output.Write(buffer, 0, fill); written += fill; fill = 0; }
            element.CopyTo(buffer.AsSpan(fill));
            fill += size;
        }
        if (fill > 0) { output.Write(buffer, 0, fill); written += fill; }
        return written;
    }

    /// <summary>The non-zero elements, in order, through a buffer; returns the bytes written.</summary>
    private static long WriteNonZero<T>(Stream output, ReadOnlySpan<byte> raw, byte[] buffer) where T : unmanaged, IEquatable<T>
    {
        var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(raw);
        // One slot of room: each value is stored, and the fill only moves past a non-zero one (no branch to mispredict).
        var staging = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(buffer.AsSpan())[..^1];
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        long written = 0;
        int fill = 0;
        for (int i = 0; i < values.Length; i++)
        {
            T v = values[i];
            staging[fill] = v;
            fill += v.Equals(default) ? 0 : 1;
            if (fill == staging.Length) { output.Write(buffer, 0, fill * size); written += fill * size; fill = 0; }
        }
        if (fill > 0) { output.Write(buffer, 0, fill * size); written += fill * size; }
        return written;
    }

    /// <summary>Bit i of <paramref name="bits"/> (little-endian within each byte) is set when element i has a non-zero byte.</summary>
    private static void NonZeroBits(ReadOnlySpan<byte> raw, int size, Span<byte> bits)
    {
        int n = raw.Length / size;
        int i = 0;
        if (size == 2 && Vector256.IsHardwareAccelerated)
        {
            // 16 elements at a time: compare with zero, gather the lanes' top bits.
            var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(raw);
            for (; i + 16 <= n; i += 16)
            {
                uint zero = Vector256.Equals(Vector256.Create(values.Slice(i, 16)), Vector256<ushort>.Zero).ExtractMostSignificantBits();
                uint nonZeroLanes = ~zero & 0xFFFF;
                bits[i / 8] = (byte)nonZeroLanes;
                bits[i / 8 + 1] = (byte)(nonZeroLanes >> 8);
            }
        }
        else if (size == 4 && Vector256.IsHardwareAccelerated)
        {
            var values = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(raw);
            for (; i + 8 <= n; i += 8)
            {
                uint zero = Vector256.Equals(Vector256.Create(values.Slice(i, 8)), Vector256<uint>.Zero).ExtractMostSignificantBits();
                bits[i / 8] = (byte)(~zero & 0xFF);
            }
        }
        for (; i < n; i += 8)
        {
            byte b = 0;
            for (int j = 0; j < 8 && i + j < n; j++)
                if (!IsZero(raw.Slice((i + j) * size, size))) b |= (byte)(1 << j);
            bits[i / 8] = b;
        }
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
        long n = ElementCount(raw, dtype);
        using var counter = new CountingStream();
        long written = Encode(counter, raw, dtype, out long nonZero);
        if (written != counter.Length)
            throw new InvalidOperationException($"the encoder reported {written} bytes but wrote {counter.Length}");
        return new SizeReport(n, n - nonZero, raw.Length, counter.Length);
    }

    /// <summary>
    /// The same report as <see cref="Measure"/> from one counting pass, without encoding: the encoded size is
    /// 8 + ceil(n / 8) + non-zeros × element size (tests hold it to <see cref="Measure"/>).
    /// </summary>
    public static SizeReport Count(ReadOnlySpan<byte> raw, TensorDType dtype) => Report(ElementCount(raw, dtype), CountNonZero(raw, dtype), dtype);

    /// <summary>The report of a tensor of <paramref name="elements"/> elements of which <paramref name="nonZero"/> are not +0.0.</summary>
    public static SizeReport Report(long elements, long nonZero, TensorDType dtype)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elements);
        ArgumentOutOfRangeException.ThrowIfNegative(nonZero);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(nonZero, elements);
        int size = dtype.ElementSize();
        return new SizeReport(elements, elements - nonZero, elements * size, 8 + (elements + 7) / 8 + nonZero * size);
    }

    /// <summary>The elements of <paramref name="raw"/> with a non-zero byte (−0.0 counts as non-zero).</summary>
    public static long CountNonZero(ReadOnlySpan<byte> raw, TensorDType dtype)
    {
        long n = ElementCount(raw, dtype);
        int size = dtype.ElementSize();
        Span<byte> bits = stackalloc byte[512];
        long nonZero = 0;
        for (long start = 0; start < n; start += bits.Length * 8)
        {
            int count = (int)Math.Min(bits.Length * 8L, n - start);
            var chunk = bits[..((count + 7) / 8)];
            NonZeroBits(raw.Slice((int)(start * size), count * size), size, chunk);
            nonZero += CountBits(chunk);
        }
        return nonZero;
    }

    private static long CountBits(ReadOnlySpan<byte> bits)
    {
        long total = 0;
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(bits);
        foreach (ulong w in words) total += BitOperations.PopCount(w);
        for (int i = words.Length * 8; i < bits.Length; i++) total += BitOperations.PopCount(bits[i]);
        return total;
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
