using Shears.Pruning.Calibration;
using Shears.Pruning.Masks;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Calibration;

/// <summary>
/// SparseGPT written the slow, obvious way to compare against: fp64 on the host, the inverse
/// Hessian by Gauss-Jordan, every OBS update applied to every later column at once, and the
/// inverse over the columns still to visit kept by eliminating one column at a time (no Cholesky,
/// no lazy blocks). Masks follow the same rules (blockwise for unstructured, per group for N:M).
/// </summary>
internal static class TextbookObs
{
    public static (double[,] Weight, BitMask Mask) Prune(float[,] x, float[,] weight, double sparsity, NmPattern? pattern, int blockSize, double dampening)
    {
        int n = x.GetLength(0), rows = weight.GetLength(0), cols = weight.GetLength(1);
        var w = new double[rows, cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) w[r, c] = weight[r, c];

        var h = new double[cols, cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++) s += (double)x[k, i] * x[k, j];
                h[i, j] = 2 * s / n;
            }
        double mean = 0;
        for (int j = 0; j < cols; j++)
        {
            if (h[j, j] == 0)
            {
                h[j, j] = 1;
                for (int r = 0; r < rows; r++) w[r, j] = 0;
            }
            mean += h[j, j] / cols;
        }
        for (int j = 0; j < cols; j++) h[j, j] += dampening * mean;
        var inverse = Invert(h);

        // [H_F⁻¹]_jj with F = the columns j.. : the saliency's denominator, fixed by H alone.
        var remaining = (double[,])inverse.Clone();
        var denominator = new double[cols];
        for (int j = 0; j < cols; j++)
        {
            denominator[j] = remaining[j, j];
            Eliminate(remaining, j);
        }

        var mask = new BitMask((long)rows * cols);
        remaining = (double[,])inverse.Clone();
        for (int i1 = 0; i1 < cols; i1 += blockSize)
        {
            int i2 = Math.Min(i1 + blockSize, cols);
            if (pattern is null)
            {
                long k = Counts.Target(sparsity, (long)rows * i2) - Counts.Target(sparsity, (long)rows * i1);
                var order = from r in Enumerable.Range(0, rows)
                            from c in Enumerable.Range(i1, i2 - i1)
                            orderby w[r, c] * w[r, c] / denominator[c], r, c
                            select (r, c);
                foreach (var (r, c) in order.Take((int)k)) mask.Set((long)r * cols + c);
            }
            for (int j = i1; j < i2; j++)
            {
                if (pattern is not null && j % pattern.M == 0)
                    for (int r = 0; r < rows; r++)
                        foreach (int c in Enumerable.Range(j, pattern.M).OrderBy(c => w[r, c] * w[r, c] / denominator[c]).ThenBy(c => c).Take(pattern.N))
                            mask.Set((long)r * cols + c);
                for (int r = 0; r < rows; r++)
                {
                    if (!mask[(long)r * cols + j]) continue;
                    // δ = −(w_j / [H_F⁻¹]_jj)·[H_F⁻¹]_{j,:}, over the columns not yet visited.
                    double e = w[r, j] / remaining[j, j];
                    for (int c = j; c < cols; c++) w[r, c] -= e * remaining[j, c];
                    w[r, j] = 0;
                }
                Eliminate(remaining, j);
            }
        }
        return (w, mask);
    }

    // Removes column j from the inverse: the inverse Hessian over the remaining columns.
    internal static void Eliminate(double[,] inverse, int j)
    {
        int size = inverse.GetLength(0);
        double pivot = inverse[j, j];
        var column = new double[size];
        var row = new double[size];
        for (int a = 0; a < size; a++) (column[a], row[a]) = (inverse[a, j], inverse[j, a]);
        for (int a = 0; a < size; a++)
            for (int b = 0; b < size; b++)
                inverse[a, b] -= column[a] * row[b] / pivot;
    }

    internal static double[,] Invert(double[,] matrix)
    {
        int size = matrix.GetLength(0);
        var a = (double[,])matrix.Clone();
        var inverse = new double[size, size];
        for (int i = 0; i < size; i++) inverse[i, i] = 1;
        for (int col = 0; col < size; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < size; r++) if (Math.Abs(a[r, col]) > Math.Abs(a[pivot, col])) pivot = r;
            for (int c = 0; c < size; c++)
            {
                (a[col, c], a[pivot, c]) = (a[pivot, c], a[col, c]);
                (inverse[col, c], inverse[pivot, c]) = (inverse[pivot, c], inverse[col, c]);
            }
            double p = a[col, col];
            for (int c = 0; c < size; c++) { a[col, c] /= p; inverse[col, c] /= p; }
            for (int r = 0; r < size; r++)
            {
                if (r == col) continue;
                double f = a[r, col];
                if (f == 0) continue;
                for (int c = 0; c < size; c++) { a[r, c] -= f * a[col, c]; inverse[r, c] -= f * inverse[col, c]; }
            }
        }
        return inverse;
    }
}
