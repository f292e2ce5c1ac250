using Shears.Pruning.Calibration;
using Shears.Pruning.Masks;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Calibration;

/// <summary>Small weights, activations and checks shared by the calibration tests.</summary>
internal static class CalibrationData
{
    public static Tensor Matrix(float[,] values) => tensor(values);

    /// <summary>Statistics of the rows of <paramref name="x"/>, fed one row at a time (streaming).</summary>
    public static InputStatistics StatsOf(float[,] x, bool withGram = false)
    {
        var stats = new InputStatistics(x.GetLength(1), withGram);
        using var scope = NewDisposeScope();
        for (int r = 0; r < x.GetLength(0); r++)
        {
            var row = new float[x.GetLength(1)];
            for (int c = 0; c < row.Length; c++) row[c] = x[r, c];
            stats.Add(tensor(row));
        }
        return stats;
    }

    /// <summary>Statistics of a tensor [n, in] in batches of <paramref name="batch"/> rows.</summary>
    public static InputStatistics StatsOf(Tensor x, bool withGram, long batch = 64)
    {
        var stats = new InputStatistics(x.shape[1], withGram);
        using var scope = NewDisposeScope();
        for (long start = 0; start < x.shape[0]; start += batch)
            stats.Add(x.narrow(0, start, Math.Min(batch, x.shape[0] - start)));
        return stats;
    }

    public static BitMask Mask(params bool[] bits) => BitMask.FromBools(bits);

    public static float[] Values(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.detach().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
    }

    /// <summary>The weights with masked elements set to zero.</summary>
    public static Tensor Apply(Tensor weight, BitMask mask)
    {
        var bits = mask.ToBools();
        using var keep = tensor(bits, weight.shape).logical_not();
        return weight.mul(keep);
    }

    /// <summary>‖X Wᵀ − X Ŵᵀ‖_F in fp64: how far the pruned layer's outputs move on the inputs.</summary>
    public static double ReconstructionError(Tensor x, Tensor weight, Tensor pruned)
    {
        using var scope = NewDisposeScope();
        var x64 = x.to(ScalarType.Float64);
        var diff = weight.to(ScalarType.Float64).sub(pruned.to(ScalarType.Float64));
        return x64.mm(diff.t()).square().sum().sqrt().item<double>();
    }

    /// <summary>Asserts every masked element of <paramref name="weight"/> is exactly +0.0.</summary>
    public static void AssertMaskedAreZero(Tensor weight, BitMask mask)
    {
        var values = Values(weight);
        Assert.Equal(mask.Length, values.Length);
        for (int i = 0; i < values.Length; i++)
            if (mask[i]) Assert.True(BitConverter.SingleToUInt32Bits(values[i]) == 0, $"masked element {i} holds {values[i]}");
    }

    public static void AssertContains(BitMask outer, BitMask inner)
    {
        for (long i = 0; i < inner.Length; i++)
            if (inner[i]) Assert.True(outer[i], $"element {i} was masked before and is not any more");
    }
}
