using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;
using Shears.Pruning.Selection;
using Shears.Pruning.Tests.Calibration;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>
/// GPTQ written the slow, obvious way from the paper to compare against: fp64 on the host, the inverse Hessian by
/// Gauss-Jordan, and after each column the inverse over the columns still to visit by eliminating that column (no
/// Cholesky factor, no lazy blocks); every column's error moves every later column at once by the OBS update
/// δ = −(e / [H_F⁻¹]_jj)·[H_F⁻¹]_{j,:}. A group's parameters are taken at its first column from the weights then,
/// masked ones as 0; masked weights are quantized to the zero point. With a sparsity or pattern it is SparseGPT's
/// joint mode, with the masks chosen as <see cref="TextbookObs"/> chooses them (no existing mask).
/// </summary>
/// <remarks>
/// Each weight is rounded as <see cref="GroupQuantizer.Quantize"/> rounds it, w / scale in fp32 from the fp64 weight
/// cast to fp32 (a symmetric group's absmax lands on exactly ±7.5 there, and rounds to even). Where the fp64 quotient
/// lies within <see cref="Tolerance"/> of a midpoint k + ½ (but not on it), the rounding depends on the last bits of
/// the weight, which the fp32 and fp64 updates leave different: there, and only there, the reference takes the
/// neighbour the code under test chose (<c>hint</c>) and counts it in <see cref="Result.Ambiguous"/>, so that one such
/// choice does not send the two sweeps down different paths. Anywhere else a different value is a failure.
/// </remarks>
internal static class ReferenceGptq
{
    public const double Tolerance = 1e-5;

    public sealed record Result(sbyte[] Values, QuantParams[] Groups, int[]? GroupIndex, float[] Dequantized, double Loss, BitMask Mask, int Ambiguous);

    public static Result Quantize(
        float[,] x, float[,] weight, BitMask? mask, QuantScheme scheme, TensorDType dtype, double dampening, bool actOrder,
        QuantizedRows? hint = null, double? sparsity = null, NmPattern? pattern = null, int blockSize = 128)
    {
        int n = x.GetLength(0), rows = weight.GetLength(0), cols = weight.GetLength(1);
        var h = new double[cols, cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++) s += (double)x[k, i] * x[k, j];
                h[i, j] = 2 * s / n;
            }
        // order[p]: the column visited p-th.
        var order = Enumerable.Range(0, cols).ToArray();
        if (actOrder) order = order.OrderByDescending(j => h[j, j]).ThenBy(j => j).ToArray();
        var hp = new double[cols, cols];
        for (int a = 0; a < cols; a++)
            for (int b = 0; b < cols; b++) hp[a, b] = h[order[a], order[b]];
        var w = new double[rows, cols];
        var masked = new bool[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < cols; p++)
            {
                w[r, p] = weight[r, order[p]];
                masked[r, p] = mask?[(long)r * cols + order[p]] ?? false;
            }

        double mean = 0;
        for (int j = 0; j < cols; j++)
        {
            if (hp[j, j] == 0)
            {
                hp[j, j] = 1;
                for (int r = 0; r < rows; r++) w[r, j] = 0;
            }
            mean += hp[j, j] / cols;
        }
        for (int j = 0; j < cols; j++) hp[j, j] += dampening * mean;
        var remaining = TextbookObs.Invert(hp);
        var denominator = new double[cols];
        var scratch = (double[,])remaining.Clone();
        for (int j = 0; j < cols; j++)
        {
            denominator[j] = scratch[j, j];
            TextbookObs.Eliminate(scratch, j);
        }

        int width = (int)scheme.GroupWidth(cols), groupsPerRow = (int)scheme.GroupsPerRow(cols);
        var values = new sbyte[rows * cols];
        var groups = new QuantParams[rows * groupsPerRow];
        var dequantized = new float[rows * cols];
        double loss = 0;
        int ambiguous = 0;
        for (int j = 0; j < cols; j++)
        {
            if (sparsity is double s && pattern is null && j % blockSize == 0)
            {
                int i2 = Math.Min(j + blockSize, cols);
                long k = Counts.Target(s, (long)rows * i2) - Counts.Target(s, (long)rows * j);
                var chosen = from r in Enumerable.Range(0, rows)
                             from c in Enumerable.Range(j, i2 - j)
                             orderby w[r, c] * w[r, c] / denominator[c], r, c
                             select (r, c);
                foreach (var (r, c) in chosen.Take((int)k)) masked[r, c] = true;
            }
            if (pattern is not null && j % pattern.M == 0)
                for (int r = 0; r < rows; r++)
                    foreach (int c in Enumerable.Range(j, pattern.M).OrderBy(c => w[r, c] * w[r, c] / denominator[c]).ThenBy(c => c).Take(pattern.N))
                        masked[r, c] = true;
            if (j % width == 0)
            {
                int count = Math.Min(width, cols - j);
                for (int r = 0; r < rows; r++)
                {
                    var group = new float[count];
                    for (int c = 0; c < count; c++) group[c] = masked[r, j + c] ? 0 : (float)w[r, j + c];
                    groups[r * groupsPerRow + j / width] = GroupQuantizer.Params(group, scheme, dtype);
                }
            }
            for (int r = 0; r < rows; r++)
            {
                var p = groups[r * groupsPerRow + j / width];
                int q;
                if (masked[r, j]) q = p.ZeroPoint;
                else
                {
                    // The quotient in fp32, as GroupQuantizer takes it (a group's absmax lands on ±7.5 exactly there).
                    q = GroupQuantizer.Quantize((float)w[r, j], p, scheme);
                    double quotient = w[r, j] / p.Scale + p.ZeroPoint;
                    double fraction = quotient - Math.Floor(quotient);
                    if (hint is not null && Math.Abs(fraction - 0.5) is > 0 and < Tolerance)
                    {
                        int other = hint.Value(r, order[j]);
                        int below = (int)Math.Clamp(Math.Floor(quotient), scheme.QMin, scheme.QMax);
                        int above = (int)Math.Clamp(Math.Floor(quotient) + 1, scheme.QMin, scheme.QMax);
                        if (other != q && (other == below || other == above)) (q, ambiguous) = (other, ambiguous + 1);
                    }
                }
                float value = GroupQuantizer.Dequantize(q, p, dtype);
                double e = w[r, j] - value;
                loss += e * e / remaining[j, j] / 2;
                for (int c = j + 1; c < cols; c++) w[r, c] -= e * remaining[j, c] / remaining[j, j];
                w[r, j] = value;
                values[r * cols + order[j]] = (sbyte)q;
                dequantized[r * cols + order[j]] = value;
            }
            TextbookObs.Eliminate(remaining, j);
        }

        int[]? groupIndex = null;
        if (actOrder && !scheme.PerChannel)
        {
            groupIndex = new int[cols];
            for (int p = 0; p < cols; p++) groupIndex[order[p]] = p / scheme.GroupSize;
        }
        var finalMask = new BitMask((long)rows * cols);
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < cols; p++)
                if (masked[r, p]) finalMask.Set((long)r * cols + order[p]);
        return new Result(values, groups, groupIndex, dequantized, loss, finalMask, ambiguous);
    }
}
