using Shears.Pruning.Checkpoints;
using Shears.Pruning.Scoring;

namespace Shears.Pruning.Tests.Selection;

/// <summary>The plain definition the fast paths must match: sort (key, position), mask the first k.</summary>
internal static class ReferenceSelection
{
    public static bool[] MaskSmallest(uint[] keys, bool[] masked, long count)
    {
        var result = (bool[])masked.Clone();
        var order = Enumerable.Range(0, keys.Length)
            .Where(i => !masked[i])
            .OrderBy(i => keys[i]).ThenBy(i => i)
            .Take(checked((int)count))
            .ToList();
        Assert.Equal(count, order.Count);
        foreach (int i in order) result[i] = true;
        return result;
    }
}

/// <summary>Weights that stress selection: heavy ties, zeros, −0, ±Inf, subnormals, bf16 and fp32.</summary>
internal static class TestWeights
{
    private static readonly float[] Specials =
        [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 1e-40f, 1f, -1f, 0.5f, -0.5f];

    /// <summary>Raw little-endian bytes of <paramref name="n"/> elements and their keys.</summary>
    public static (byte[] Raw, uint[] Keys) Make(Random rng, int n, TensorDType dtype, string name = "t")
    {
        int mode = rng.Next(4);
        var levels = Enumerable.Range(0, 1 + rng.Next(6)).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var values = new float[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = mode switch
            {
                0 => levels[rng.Next(levels.Length)],                                  // a handful of levels
                1 => rng.Next(4) == 0 ? Specials[rng.Next(Specials.Length)] : levels[rng.Next(levels.Length)],
                2 => (float)(rng.NextDouble() * 2 - 1),                                // mostly distinct
                _ => rng.Next(3) == 0 ? Specials[rng.Next(Specials.Length)] : (float)(rng.NextDouble() * 2e-3 - 1e-3),
            };
        }

        int size = dtype.ElementSize();
        var raw = new byte[n * size];
        for (int i = 0; i < n; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(values[i]);
            switch (dtype)
            {
                case TensorDType.F32: BitConverter.TryWriteBytes(raw.AsSpan(4 * i), bits); break;
                case TensorDType.BF16: BitConverter.TryWriteBytes(raw.AsSpan(2 * i), (ushort)(bits >> 16)); break;
                default: BitConverter.TryWriteBytes(raw.AsSpan(2 * i), BitConverter.HalfToUInt16Bits((Half)values[i])); break;
            }
        }
        var keys = new uint[n];
        ScoreKeys.Magnitude(raw, dtype, keys, name);
        return (raw, keys);
    }

    public static TensorDType AnyDType(Random rng) => rng.Next(3) switch
    {
        0 => TensorDType.F32,
        1 => TensorDType.BF16,
        _ => TensorDType.F16,
    };

    public static bool[] RandomMask(Random rng, int n)
    {
        double p = rng.Next(3) switch { 0 => 0, 1 => 0.3, _ => rng.NextDouble() };
        return Enumerable.Range(0, n).Select(_ => rng.NextDouble() < p).ToArray();
    }
}
