using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// One lazy block of the column sweep SparseGPT and GPTQ share: column by column, the weights become their target q
/// (0 where masked; the quantized value of the others when quantizing, the weight itself when only pruning), and the
/// column's error (w − q) / U_jj is spread by the optimal brain surgeon update over the block's later columns at once
/// and over the columns right of the block after it. Masked weights take the updates of the columns before theirs
/// like any other and are then zeroed with their error spread on: the sequential OBS step for a weight fixed at 0.
/// </summary>
internal static class ObsBlock
{
    /// <summary>
    /// Sweeps columns [i1, i1 + count) of <paramref name="w"/> [rows, cols] (fp32, changed in place) with the factor
    /// <paramref name="u"/>; <paramref name="w1"/> is the block's working copy, <paramref name="blockBits"/> its mask
    /// (bool [rows, count]), which <paramref name="beforeColumn"/> (given the column's index in the block, the working
    /// copy and U's block diagonal) may extend before each column is visited. <paramref name="mask"/> is the whole
    /// mask on the host, read by the quantizer's groups. Returns Σ err² / 2 over the block.
    /// </summary>
    public static double Sweep(
        Tensor w, Tensor u, long i1, long count, Tensor w1, Tensor blockBits, BitMask mask,
        ColumnQuantizer? quantizer, Action<long, Tensor, Tensor>? beforeColumn)
    {
        long cols = w.shape[1];
        var u1 = u.narrow(0, i1, count).narrow(1, i1, count);
        var d = u1.diagonal();
        var q1 = zeros_like(w1);
        var err1 = zeros_like(w1);
        using var zeroScalar = 0.0.ToScalar(); // held for the whole loop: an implicit Scalar may be finalized mid-call
        for (long i = 0; i < count; i++)
        {
            using var columnScope = NewDisposeScope();
            beforeColumn?.Invoke(i, w1, d);
            long at = i1 + i;
            if (quantizer is not null && quantizer.StartsGroup(at))
                quantizer.BeginGroup(at, ColumnQuantizer.Current(w, u, w1, err1, i1, i, quantizer.WidthAt(at)), mask);

            var column = w1.select(1, i);
            var masked = blockBits.select(1, i);
            var q = quantizer is null ? column.masked_fill(masked, zeroScalar) : quantizer.Column(at, column, masked);
            var err = column.sub(q).div_(d[i]);
            q1.select(1, i).copy_(q);
            err1.select(1, i).copy_(err);
            w1.narrow(1, i, count - i).sub_(err.unsqueeze(1).mm(u1.narrow(0, i, 1).narrow(1, i, count - i)));
        }
        w.narrow(1, i1, count).copy_(q1);
        long right = cols - (i1 + count);
        if (right > 0)
            w.narrow(1, i1 + count, right).sub_(err1.mm(u.narrow(0, i1, count).narrow(1, i1 + count, right)));
        return err1.square().sum().item<float>() / 2.0;
    }
}
