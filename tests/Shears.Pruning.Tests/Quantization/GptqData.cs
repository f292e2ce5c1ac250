using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>Seeded layers for the GPTQ tests: weights with ties, correlated integer inputs, masks.</summary>
internal static class GptqData
{
    /// <summary>
    /// Inputs [samples, cols] X = Z·(I + B) with small integers Z and B, so every Gram entry is exact in fp32 and
    /// fp64 alike; columns 2t + 1 for t &lt; cols / 8 hold column 2t's samples in reverse order: equal H_jj (ties for the
    /// activation order) from different inputs.
    /// </summary>
    public static float[,] Inputs(int seed, int samples, int cols)
    {
        var rng = new Random(seed);
        var z = new int[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++) z[k, j] = rng.Next(-2, 3);
        var mixing = new int[cols, cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++) mixing[i, j] = (i == j ? 1 : 0) + (rng.NextDouble() < 0.15 ? rng.Next(-1, 2) : 0);
        var x = new float[samples, cols];
        for (int k = 0; k < samples; k++)
            for (int j = 0; j < cols; j++)
            {
                int s = 0;
                for (int i = 0; i < cols; i++) s += z[k, i] * mixing[i, j];
                x[k, j] = s;
            }
        for (int t = 0; t < cols / 8; t++)
            for (int k = 0; k < samples; k++) x[k, 2 * t + 1] = x[samples - 1 - k, 2 * t];
        return x;
    }

    /// <summary>Gaussian weights rounded to eighths (many equal values, exact in bf16 and fp16), masked ones 0.</summary>
    public static float[,] Weights(int seed, int rows, int cols, BitMask? mask)
    {
        var rng = new Random(seed);
        var w = new float[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                w[r, c] = mask?[(long)r * cols + c] == true ? 0 : MathF.Round((float)Gaussian(rng) * 8) / 8;
        return w;
    }

    public static BitMask? RandomMask(int seed, int rows, int cols, double fraction)
    {
        if (fraction == 0) return null;
        var rng = new Random(seed);
        var mask = new BitMask((long)rows * cols);
        for (long i = 0; i < mask.Length; i++) if (rng.NextDouble() < fraction) mask.Set(i);
        return mask;
    }

    public static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    public static QuantScheme Scheme(string name, int groupSize) => QuantScheme.Parse(name, Math.Max(groupSize, 1));

    public static float[] Flat(float[,] values)
    {
        var flat = new float[values.Length];
        Buffer.BlockCopy(values, 0, flat, 0, flat.Length * sizeof(float));
        return flat;
    }

    /// <summary>The dequantized weights of <paramref name="rows"/> as fp32, [rows, columns].</summary>
    public static float[] Dequantized(QuantizedRows rows)
    {
        var raw = rows.DequantizedBytes();
        return QuantizedRows.Widen(raw, rows.DType, (long)rows.Rows * rows.Columns, "dequantized");
    }

    /// <summary>‖(W − Ŵ) Xᵀ‖² in fp64: the layer's output error on the inputs.</summary>
    public static double OutputError(float[,] x, float[,] weight, ReadOnlySpan<float> quantized)
    {
        int n = x.GetLength(0), rows = weight.GetLength(0), cols = weight.GetLength(1);
        double total = 0;
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < n; k++)
            {
                double s = 0;
                for (int c = 0; c < cols; c++) s += ((double)weight[r, c] - quantized[r * cols + c]) * x[k, c];
                total += s * s;
            }
        return total;
    }

    public static TensorDType DType(string name) => Enum.Parse<TensorDType>(name);
}
