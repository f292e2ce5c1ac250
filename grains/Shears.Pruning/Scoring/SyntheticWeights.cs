using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Scoring;

/// <summary>
/// Weights generated from a seeded hash instead of read from a file: element i of tensor T is a bf16 made from
/// SplitMix64(seed ^ FNV-1a(T) + i) — the sign from the top bit, the 7 mantissa bits from the lowest, and the exponent
/// 2^-6 lowered by one for each trailing zero of the next 10 bits, so that magnitudes fall off geometrically from 2^-6 to
/// 2^-16 as a trained layer's do (1,408 distinct magnitudes: ties everywhere). A benchmark mode: shards of a run with
/// <c>--synthetic-weights SEED</c> score these instead of the checkpoint's bytes, so a model's shapes can be pruned
/// without its terabytes; <c>Shears.Bench synthetic-checkpoint</c> writes the same weights to a real file.
/// </summary>
public static class SyntheticWeights
{
    /// <summary>The bf16 bits of elements [offset, offset + into.Length) of <paramref name="tensorName"/>.</summary>
    public static void Bf16(long seed, string tensorName, long offset, Span<ushort> into)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ulong stream = (ulong)seed ^ ScoreKeys.Fnv1a64(tensorName);
        for (int i = 0; i < into.Length; i++) into[i] = Element(ScoreKeys.SplitMix64(stream + (ulong)(offset + i)));
    }

    /// <summary>The bf16 made from one hash value.</summary>
    public static ushort Element(ulong r)
    {
        uint mantissa = (uint)r & 0x7F;
        uint lowered = (uint)Math.Min(10, System.Numerics.BitOperations.TrailingZeroCount((uint)(r >> 7) | (1u << 10)));
        uint exponent = 127 - 6 - lowered;
        uint sign = (uint)(r >> 63);
        return (ushort)((sign << 15) | (exponent << 7) | mantissa);
    }

    /// <summary>The same elements as little-endian bytes (2 per element), as a checkpoint stores them.</summary>
    public static void Bytes(long seed, string tensorName, long offset, Span<byte> into)
    {
        if (into.Length % 2 != 0) throw new ArgumentException($"{into.Length} bytes hold no whole number of bf16 elements", nameof(into));
        ulong stream = (ulong)seed ^ ScoreKeys.Fnv1a64(tensorName);
        for (int i = 0; i < into.Length / 2; i++)
            BinaryPrimitives.WriteUInt16LittleEndian(into[(2 * i)..], Element(ScoreKeys.SplitMix64(stream + (ulong)(offset + i))));
    }

    /// <summary>
    /// Magnitude keys of those elements: exactly what <see cref="ScoreKeys.Magnitude"/> gives for their bytes (the fp32
    /// bits of |w|: a bf16's magnitude bits shifted up by 16; the generator makes no NaN or infinity), computed directly.
    /// </summary>
    public static void MagnitudeKeys(long seed, string tensorName, long offset, Span<uint> keys)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ulong stream = ((ulong)seed ^ ScoreKeys.Fnv1a64(tensorName)) + (ulong)offset;
        int i = 0;
        // Sixteen at a time where 64-bit lanes multiply in hardware (AVX-512DQ); the same arithmetic as Element.
        if (Vector512.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx512DQ.IsSupported)
        {
            var lanes = Vector512.Create(0UL, 1, 2, 3, 4, 5, 6, 7);
            for (; i + 16 <= keys.Length; i += 16)
            {
                var low = SplitMix64(Vector512.Create(stream + (ulong)i) + lanes);
                var high = SplitMix64(Vector512.Create(stream + (ulong)i + 8) + lanes);
                var bits = Vector512.Narrow(low, high);
                var above = Vector512.Narrow(Vector512.ShiftRightLogical(low, 7), Vector512.ShiftRightLogical(high, 7));
                var y = (above & Vector512.Create(0x3FFu)) | Vector512.Create(0x400u);
                // The lowest set bit of y is 2^k with k = its trailing zeros (at most 10): read k off its float's exponent.
                var lowest = y & (Vector512<uint>.Zero - y);
                var k = Vector512.ShiftRightLogical(Vector512.ConvertToSingle(lowest.AsInt32()).AsUInt32(), 23) - Vector512.Create(127u);
                var exponent = Vector512.Create(121u) - k;
                var key = Vector512.ShiftLeft(Vector512.ShiftLeft(exponent, 7) | (bits & Vector512.Create(0x7Fu)), 16);
                key.CopyTo(keys[i..]);
            }
        }
        for (; i < keys.Length; i++) keys[i] = (uint)(Element(ScoreKeys.SplitMix64(stream + (ulong)i)) & 0x7FFF) << 16;
    }

    private static Vector512<ulong> SplitMix64(Vector512<ulong> state)
    {
        var z = state + Vector512.Create(0x9E37_79B9_7F4A_7C15UL);
        z = (z ^ Vector512.ShiftRightLogical(z, 30)) * Vector512.Create(0xBF58_476D_1CE4_E5B9UL);
        z = (z ^ Vector512.ShiftRightLogical(z, 27)) * Vector512.Create(0x94D0_49BB_1331_11EBUL);
        return z ^ Vector512.ShiftRightLogical(z, 31);
    }
}
