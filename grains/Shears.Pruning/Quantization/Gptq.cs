using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Quantization;

/// <summary>
/// What GPTQ made of one weight: the dequantized weight [out, in] (fp32 holding values of the weight's dtype, on the
/// weight's device, masked elements exactly +0.0; the caller owns it), the quantized rows it dequantizes from (their
/// error measured against the input weight), and the loss Σ (w − q)² / (2·U_jj²) as SparseGPT's, the predicted
/// growth of the layer's error in units of H. <see cref="RoundToNearest"/>: the Hessian had no Cholesky factor even
/// dampened, and the weight was rounded to nearest instead (dead columns still zeroed).
/// </summary>
public sealed record GptqResult(Tensor Weight, QuantizedRows Quantized, double Loss, bool RoundToNearest) : IDisposable
{
    public void Dispose() => Weight.Dispose();
}

/// <summary>
/// GPTQ (Frantar et al. 2022, "Accurate Post-Training Quantization for Generative Pre-trained Transformers"): the
/// columns are quantized left to right and each column's rounding error is spread over the columns not yet visited by
/// the optimal brain surgeon update, with SparseGPT's Hessian, dampening, dead columns, Cholesky factor of the inverse
/// and lazy blocks (see <see cref="SparseGpt"/>).
/// </summary>
/// <remarks>
/// <para>Groups: a group's scale and zero point are taken when the sweep reaches its first column, from its weights as
/// the errors before them have left them (the paper's code; llm-compressor's groups when they are not static); a
/// per-channel scheme takes each row's once, from the weight before the sweep. Parameters and rounding are
/// <see cref="GroupQuantizer"/>'s, with the quotient w / scale taken in fp32 on the fp32 working weights.</para>
/// <para>Masks survive exactly: a masked weight is quantized to its zero point and dequantizes to exactly 0.0; it
/// counts as 0 in its group's parameters; the errors of the columns before it move it like any other weight, and its
/// own error (w − 0) / U_jj is spread on, as SparseGPT spreads a pruned weight's. That is the sequential OBS step for a
/// weight held at 0, where leaving masked weights out of the updates would not be.</para>
/// <para>Activation order: the columns are visited by decreasing H_jj (ties by lower column), and with a grouped
/// scheme the groups are consecutive in that order (llm-compressor's actorder "group"): the result holds the values in
/// the weight's own column order with a group index g_idx[j] = (rank of column j) / group size.</para>
/// </remarks>
public static class Gptq
{
    /// <param name="weight">
    /// [out, in], F32, BF16 or F16, its masked elements 0 (one that is not is removed as SparseGPT removes a pruned
    /// weight, its error spread over the later columns; the error of the result is measured against 0 there).
    /// </param>
    /// <param name="stats">The layer's inputs, gathered with the Gram matrix.</param>
    /// <param name="scheme">The quantization scheme.</param>
    /// <param name="dtype">The dtype the weight is stored in: scales and dequantized values are rounded to it.</param>
    /// <param name="mask">The masked (pruned) elements, row-major; null when none are.</param>
    /// <param name="dampening">λ = dampening · mean(diag H), added to the diagonal.</param>
    /// <param name="actOrder">Visit the columns by decreasing H_jj.</param>
    public static GptqResult Quantize(
        Tensor weight, InputStatistics stats, QuantScheme scheme, TensorDType dtype, BitMask? mask = null,
        int blockSize = 128, double dampening = 0.01, bool actOrder = false, string tensorName = "weight")
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        ArgumentNullException.ThrowIfNull(scheme);
        InverseHessian.CheckStatistics(stats, cols, tensorName, "GPTQ");
        ColumnQuantizer.CheckDType(dtype, tensorName);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        InverseHessian.CheckDampening(dampening);
        if (mask is not null && mask.Length != rows * cols)
            throw new ArgumentException($"tensor '{tensorName}' of shape [{rows}, {cols}] has {rows * cols} elements, its mask {mask.Length}", nameof(mask));
        var given = HostWeights.StartMask(mask, rows, cols, tensorName);
        var original = HostWeights.Read(weight);
        HostWeights.RejectNaN(original, tensorName);
        for (int i = 0; i < original.Length; i++)
            if (float.IsInfinity(original[i]))
                throw new ArgumentException($"tensor '{tensorName}' holds {original[i]} at element {i}: only finite weights can be quantized", nameof(weight));

        using var scope = NewDisposeScope();
        var device = weight.device;
        var w = weight.detach().to(ScalarType.Float32, device, copy: true);
        var h = stats.Hessian(device);
        long[]? order = actOrder ? ActivationOrder(h) : null;
        var sweepMask = given;
        if (order is not null)
        {
            using var index = tensor(order, device: device);
            w = w.index_select(1, index);
            h = h.index_select(0, index).index_select(1, index);
            sweepMask = PermuteColumns(given, rows, cols, order);
        }
        var u = InverseHessian.UpperFactor(h, w, dampening, out _);
        bool fallback = u is null;
        // llm-compressor's fallback: with U = I no error moves another column, and the sweep rounds to nearest.
        u ??= eye(cols, dtype: ScalarType.Float32, device: device);

        var bits = tensor(sweepMask.ToBools(), [rows, cols], device: device);
        using var quantizer = new ColumnQuantizer(scheme, dtype, rows, cols, device, tensorName);
        double loss = 0;
        for (long i1 = 0; i1 < cols; i1 += blockSize)
        {
            using var blockScope = NewDisposeScope();
            long count = Math.Min(blockSize, cols - i1);
            var w1 = w.narrow(1, i1, count).clone();
            loss += ObsBlock.Sweep(w, u, i1, count, w1, bits.narrow(1, i1, count), sweepMask, quantizer, null);
        }

        var values = quantizer.Values();
        int[]? groupIndex = null;
        if (order is not null)
        {
            var inverse = new long[cols];
            for (int p = 0; p < cols; p++) inverse[order[p]] = p;
            using var index = tensor(inverse, device: device);
            w = w.index_select(1, index);
            values = UnpermuteColumns(values, rows, cols, order);
            if (!scheme.PerChannel)
            {
                groupIndex = new int[cols];
                for (int p = 0; p < cols; p++) groupIndex[order[p]] = p / scheme.GroupSize;
            }
        }
        for (int i = 0; i < original.Length; i++) if (given[i]) original[i] = 0;
        var quantized = new QuantizedRows(scheme, dtype, (int)rows, (int)cols, values, quantizer.Groups, original, groupIndex);
        return new GptqResult(w.MoveToOuterDisposeScope(), quantized, loss, fallback);
    }

    /// <summary>The columns by decreasing H_jj, ties by lower column (a stable order, unlike argsort's).</summary>
    private static long[] ActivationOrder(Tensor h)
    {
        double[] diagonal;
        using (NewDisposeScope()) diagonal = h.diagonal().cpu().contiguous().data<double>().ToArray();
        return Enumerable.Range(0, diagonal.Length).OrderByDescending(j => diagonal[j]).Select(j => (long)j).ToArray();
    }

    /// <summary>The mask with column p taken from column order[p].</summary>
    private static BitMask PermuteColumns(BitMask mask, long rows, long cols, long[] order)
    {
        var permuted = new BitMask(rows * cols);
        for (long r = 0; r < rows; r++)
            for (long p = 0; p < cols; p++)
                if (mask[r * cols + order[p]]) permuted.Set(r * cols + p);
        return permuted;
    }

    private static sbyte[] UnpermuteColumns(sbyte[] values, long rows, long cols, long[] order)
    {
        var restored = new sbyte[values.Length];
        for (long r = 0; r < rows; r++)
            for (long p = 0; p < cols; p++)
                restored[r * cols + order[p]] = values[r * cols + p];
        return restored;
    }
}
