using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Bench;

/// <summary>
/// Runs the measured code on small inputs until the JIT has tiered it up (30 calls, then the
/// background tier-1 compile), so the first measured repeat is not charged for compilation.
/// </summary>
internal static class Warmup
{
    public static void Selection()
    {
        float[] weights = Weights.Normal(1 << 16, 0.02f, 1);
        ushort[] bits = Weights.ToBFloat16(weights);
        var keys = new uint[weights.Length];
        for (int i = 0; i < 40; i++)
        {
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(bits.AsSpan()), TensorDType.BF16, keys, "warmup");
            GlobalProtocol.Run([new BenchShard(0, keys)], keys.Length / 2, 1);
            ScoreKeys.Magnitude(MemoryMarshal.AsBytes(weights.AsSpan()), TensorDType.F32, keys, "warmup");
            var half = keys.Length / 2;
            GlobalProtocol.Run([new BenchShard(0, keys[..half]), new BenchShard(half, keys[half..])], keys.Length / 2, 2);
            LocalSelection.MaskSmallest(keys, new BitMask(keys.Length), keys.Length / 2);
        }
        Thread.Sleep(500);
    }
}
