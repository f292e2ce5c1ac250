using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Scoring;

/// <summary>
/// Scores as <see cref="uint"/> keys whose unsigned order is the score order: every score is a
/// non-negative fp32 value, and non-negative IEEE floats sort like their bit patterns.
/// Selection works on keys only, so it never compares floats.
/// </summary>
public static class ScoreKeys
{
    /// <summary>Key of +Inf: larger than the key of any finite score.</summary>
    public const uint InfinityKey = 0x7F80_0000;

    public static float ToScore(uint key) => BitConverter.UInt32BitsToSingle(key);

    public static uint FromScore(float score)
    {
        if (float.IsNaN(score) || score < 0)
            throw new ArgumentOutOfRangeException(nameof(score), score, "a score must be a non-negative number");
        return BitConverter.SingleToUInt32Bits(score) & 0x7FFF_FFFF; // -0 → 0
    }

    /// <summary>
    /// Magnitude scores |w| in fp32 (exact for bf16 and fp16) of little-endian elements.
    /// -0 scores 0, ±Inf scores largest, NaN throws <see cref="NaNWeightException"/> naming the
    /// tensor and the element (<paramref name="elementOffset"/> + i, the element's index in the
    /// whole tensor when <paramref name="raw"/> holds a piece of it).
    /// </summary>
    public static void Magnitude(ReadOnlySpan<byte> raw, TensorDType dtype, Span<uint> keys, string tensorName, long elementOffset = 0)
    {
        if (!dtype.IsPrunable())
            throw new ArgumentException($"tensor '{tensorName}' has dtype {dtype}; magnitude scores take F32, F16 or BF16", nameof(dtype));
        int size = dtype.ElementSize();
        if (raw.Length != (long)keys.Length * size)
            throw new ArgumentException(
                $"tensor '{tensorName}': {keys.Length} {dtype} elements take {(long)keys.Length * size} bytes, got {raw.Length}", nameof(raw));

        int nanAt = dtype switch
        {
            TensorDType.F32 => MagnitudeF32(raw, keys),
            TensorDType.BF16 => MagnitudeBF16(raw, keys),
            _ => MagnitudeF16(raw, keys),
        };
        if (nanAt >= 0) throw new NaNWeightException(tensorName, elementOffset + nanAt);
    }

    // Each returns the index of the first NaN, or -1.
    private static int MagnitudeF32(ReadOnlySpan<byte> raw, Span<uint> keys)
    {
        int i = 0;
        uint worst = 0;
        if (BitConverter.IsLittleEndian)
        {
            ReadOnlySpan<uint> bits = MemoryMarshal.Cast<byte, uint>(raw);
            if (Vector.IsHardwareAccelerated)
            {
                var abs = new Vector<uint>(0x7FFF_FFFF);
                var acc = Vector<uint>.Zero;
                for (; i <= bits.Length - Vector<uint>.Count; i += Vector<uint>.Count)
                {
                    var v = Vector.BitwiseAnd(new Vector<uint>(bits[i..]), abs);
                    v.CopyTo(keys[i..]);
                    acc = Vector.Max(acc, v);
                }
                for (int l = 0; l < Vector<uint>.Count; l++) worst = Math.Max(worst, acc[l]);
            }
            for (; i < bits.Length; i++)
            {
                uint k = bits[i] & 0x7FFF_FFFF;
                keys[i] = k;
                worst = Math.Max(worst, k);
            }
        }
        else
        {
            for (; i < keys.Length; i++)
            {
                uint k = BinaryPrimitives.ReadUInt32LittleEndian(raw[(i * 4)..]) & 0x7FFF_FFFF;
                keys[i] = k;
                worst = Math.Max(worst, k);
            }
        }
        return worst > InfinityKey ? FirstAbove(keys, InfinityKey) : -1;
    }

    private static int MagnitudeBF16(ReadOnlySpan<byte> raw, Span<uint> keys)
    {
        uint worst = 0;
        int i = 0;
        if (BitConverter.IsLittleEndian && Vector.IsHardwareAccelerated)
        {
            // Widen |bits| to the high half of a uint: the fp32 bits of the same value.
            ReadOnlySpan<ushort> bits = MemoryMarshal.Cast<byte, ushort>(raw);
            var abs = new Vector<ushort>(0x7FFF);
            var acc = Vector<uint>.Zero;
            for (; i <= bits.Length - Vector<ushort>.Count; i += Vector<ushort>.Count)
            {
                Vector.Widen(Vector.BitwiseAnd(new Vector<ushort>(bits[i..]), abs), out var low, out var high);
                low = Vector.ShiftLeft(low, 16);
                high = Vector.ShiftLeft(high, 16);
                low.CopyTo(keys[i..]);
                high.CopyTo(keys[(i + Vector<uint>.Count)..]);
                acc = Vector.Max(acc, Vector.Max(low, high));
            }
            for (int l = 0; l < Vector<uint>.Count; l++) worst = Math.Max(worst, acc[l]);
        }
        for (; i < keys.Length; i++)
        {
            uint k = (uint)(BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]) & 0x7FFF) << 16;
            keys[i] = k;
            worst = Math.Max(worst, k);
        }
        return worst > InfinityKey ? FirstAbove(keys, InfinityKey) : -1;
    }

    private static int MagnitudeF16(ReadOnlySpan<byte> raw, Span<uint> keys)
    {
        for (int i = 0; i < keys.Length; i++)
        {
            ushort abs = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]) & 0x7FFF);
            if (abs > 0x7C00) return i;
            // fp16 → fp32 is exact, Inf included.
            keys[i] = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(abs));
        }
        return -1;
    }

    /// <summary>
    /// Throws <see cref="NaNWeightException"/> (tensor and element as for <see cref="Magnitude"/>) at the first NaN among
    /// little-endian fp32, fp16 or bf16 elements. On little-endian machines it writes no keys: one read of the bytes.
    /// </summary>
    public static void CheckNoNaN(ReadOnlySpan<byte> raw, TensorDType dtype, string tensorName, long elementOffset = 0)
    {
        if (!dtype.IsPrunable())
            throw new ArgumentException($"tensor '{tensorName}' has dtype {dtype}; magnitude scores take F32, F16 or BF16", nameof(dtype));
        int size = dtype.ElementSize();
        if (raw.Length % size != 0)
            throw new ArgumentException($"tensor '{tensorName}': {raw.Length} bytes are not whole {dtype} elements", nameof(raw));
        if (!BitConverter.IsLittleEndian)
        {
            var keys = new uint[Math.Min(1 << 16, raw.Length / size)];
            for (int start = 0; start < raw.Length / size; start += keys.Length)
            {
                int n = Math.Min(keys.Length, raw.Length / size - start);
                Magnitude(raw.Slice(start * size, n * size), dtype, keys.AsSpan(0, n), tensorName, elementOffset + start);
            }
            return;
        }
        int nanAt = size == 4
            ? FirstNaN(MemoryMarshal.Cast<byte, uint>(raw), 0x7FFF_FFFFu, InfinityKey)
            : FirstNaN(MemoryMarshal.Cast<byte, ushort>(raw), (ushort)0x7FFF, dtype == TensorDType.BF16 ? (ushort)0x7F80 : (ushort)0x7C00);
        if (nanAt >= 0) throw new NaNWeightException(tensorName, elementOffset + nanAt);
    }

    /// <summary>The index of the first element whose bits without the sign exceed <paramref name="infinity"/>'s, or -1.</summary>
    private static int FirstNaN<T>(ReadOnlySpan<T> bits, T abs, T infinity) where T : unmanaged, IBinaryInteger<T>, IUnsignedNumber<T>
    {
        const int Block = 4096;
        for (int start = 0; start < bits.Length; start += Block)
        {
            var block = bits.Slice(start, Math.Min(Block, bits.Length - start));
            // Vector maxima first, without a branch per element; the scan below only runs on a block that holds a NaN.
            if (Vector.IsHardwareAccelerated && block.Length >= Vector<T>.Count)
            {
                var a = new Vector<T>(abs);
                var worst = Vector<T>.Zero;
                int i = 0;
                for (; i <= block.Length - Vector<T>.Count; i += Vector<T>.Count) worst = Vector.Max(worst, Vector.BitwiseAnd(new Vector<T>(block[i..]), a));
                bool tail = false;
                for (; i < block.Length; i++) tail |= (block[i] & abs) > infinity;
                if (!tail && !Vector.GreaterThanAny(worst, new Vector<T>(infinity))) continue;
            }
            for (int i = 0; i < block.Length; i++) if ((block[i] & abs) > infinity) return start + i;
        }
        return -1;
    }

    private static int FirstAbove(ReadOnlySpan<uint> keys, uint limit)
    {
        for (int i = 0; i < keys.Length; i++) if (keys[i] > limit) return i;
        return -1;
    }

    /// <summary>
    /// Random scores, uniform in [0, 1) with 24 random bits (exact in fp32). Element e of tensor t
    /// scores SplitMix64((seed ^ FNV-1a-64(UTF-8 of t)) + e) >> 40, scaled by 2^-24: the same
    /// element gets the same score however the tensor is split into pieces.
    /// </summary>
    public static void Random(ulong seed, string tensorName, long elementOffset, Span<uint> keys)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementOffset);
        ulong stream = seed ^ Fnv1a64(tensorName);
        for (int i = 0; i < keys.Length; i++)
        {
            ulong r = SplitMix64(stream + (ulong)(elementOffset + i));
            keys[i] = BitConverter.SingleToUInt32Bits((r >> 40) * (1f / (1 << 24)));
        }
    }

    /// <summary>FNV-1a, 64-bit, over the UTF-8 bytes of <paramref name="text"/>.</summary>
    public static ulong Fnv1a64(string text)
    {
        ulong hash = 0xCBF2_9CE4_8422_2325;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            hash ^= b;
            hash *= 0x0000_0100_0000_01B3;
        }
        return hash;
    }

    /// <summary>The first output of a SplitMix64 generator whose state is <paramref name="state"/>.</summary>
    public static ulong SplitMix64(ulong state)
    {
        ulong z = state + 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }
}
