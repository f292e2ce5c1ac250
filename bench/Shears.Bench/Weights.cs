using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;

namespace Shears.Bench;

/// <summary>Seeded normal(0, σ) weights, the same for any thread count.</summary>
internal static class Weights
{
    private const int Chunk = 1 << 20;

    public static float[] Normal(long count, float sigma, ulong seed)
    {
        var weights = new float[count];
        long chunks = (count + Chunk - 1) / Chunk;
        Parallel.For(0L, chunks, c =>
        {
            // Each chunk has its own stream, so the result does not depend on scheduling.
            ulong state = ScoreKeys.SplitMix64(seed ^ ScoreKeys.SplitMix64((ulong)c));
            var span = weights.AsSpan((int)(c * Chunk), (int)Math.Min(Chunk, count - c * Chunk));
            for (int i = 0; i < span.Length; i += 2)
            {
                // Box–Muller on two uniforms in (0, 1].
                double u1 = ((Next(ref state) >> 11) + 1) * (1.0 / (1UL << 53));
                double u2 = (Next(ref state) >> 11) * (1.0 / (1UL << 53));
                double r = sigma * Math.Sqrt(-2 * Math.Log(u1));
                (double sin, double cos) = Math.SinCos(2 * Math.PI * u2);
                span[i] = (float)(r * cos);
                if (i + 1 < span.Length) span[i + 1] = (float)(r * sin);
            }
        });
        return weights;
    }

    /// <summary>Round to nearest even, as PyTorch's .to(bfloat16).</summary>
    public static ushort[] ToBFloat16(float[] weights)
    {
        var bits = new ushort[weights.Length];
        Parallel.For(0L, (weights.LongLength + Chunk - 1) / Chunk, c =>
        {
            long end = Math.Min(weights.LongLength, (c + 1) * Chunk);
            for (long i = c * Chunk; i < end; i++) bits[i] = FloatBits.SingleToBFloat16(weights[i]);
        });
        return bits;
    }

    private static ulong Next(ref ulong state)
    {
        state += 0x9E37_79B9_7F4A_7C15;
        ulong z = state;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }
}
