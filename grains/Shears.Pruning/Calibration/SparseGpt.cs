using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Calibration;

/// <summary>
/// What SparseGPT made of one weight: the OBS-compensated weight [out, in] (fp32, on the weight's
/// device, masked elements exactly +0.0; the caller owns it), the mask, and the paper's running
/// loss Σ (w − q)² / (2·[H_F⁻¹]_jj), the predicted growth of the layer's error in units of H.
/// </summary>
public sealed record SparseGptResult(Tensor Weight, BitMask Mask, double Loss) : IDisposable
{
    public void Dispose() => Weight.Dispose();
}

/// <summary>
/// SparseGPT (Frantar &amp; Alistarh 2023, "Massive Language Models Can Be Accurately Pruned in
/// One-Shot"): columns are pruned left to right, and each pruned weight's error is spread over the
/// columns not yet visited by the optimal brain surgeon update δ = −(w_p / [H⁻¹]_pp)·H⁻¹_{:,p}.
/// </summary>
/// <remarks>
/// <para>Hessian: H = 2·XᵀX / n (the paper's scaling, n = input vectors seen), accumulated and
/// inverted in fp64. Any constant factor cancels in both the choice (w²/[H⁻¹]_jj scales uniformly)
/// and the update, and the dampening is relative: λ = dampening·mean(diag H) is added to the
/// diagonal. A dead input (H_jj = 0: the feature was zero on every sample) gets H_jj = 1 and its
/// weight column is set to 0, as the paper's code does, whether or not it ends up masked.</para>
/// <para>Sweep: H⁻¹ = UᵀU with U upper triangular (Cholesky of the inverse); row j of U is the
/// j-th row of the inverse Hessian of the columns j.. still to be visited, divided by its diagonal's
/// square root, which is all the sequential OBS updates need. Columns go in lazy blocks of
/// <c>blockSize</c>: updates inside a block are applied column by column, to the rest of the
/// matrix once per block. The sweep runs in fp32 on the weight's device.</para>
/// <para>Unstructured mask, chosen adaptively as in the paper: at the start of each block, over the
/// whole block (all rows × its columns), the smallest saliencies w²/U_jj² = w²/[H_F⁻¹]_jj of the
/// block's current, already compensated weights, ties by lower row-major position. The count is
/// exact where the reference code's threshold is not: the block that ends at column c brings the
/// masked elements of columns [0, c) to round_half_to_even(s × rows × c), so the blocks together mask
/// exactly round_half_to_even(s × rows × cols) of the layer. With an existing mask, its elements are
/// forced into their blocks (zeroed with compensation) and count; a block's prefix target is then
/// clamped so that the layer still ends at its exact count (or at what was already masked, when that
/// is more: masks never shrink).</para>
/// <para>N:M mask: at the first column of each group of M, per row, the N smallest w²/U_jj² of the
/// group's current weights (ties by lower column), fewer where the existing mask already holds some;
/// <c>sparsity</c> is then only checked to be in [0, 1], the pattern decides the count.</para>
/// </remarks>
public static class SparseGpt
{
    public static SparseGptResult Prune(
        Tensor weight, InputStatistics stats, double sparsity, NmPattern? pattern = null,
        int blockSize = 128, double dampening = 0.01, BitMask? existing = null, string tensorName = "weight")
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        ArgumentNullException.ThrowIfNull(stats);
        if (stats.Features != cols)
            throw new ArgumentException(
                $"tensor '{tensorName}' has {cols} input columns but its calibration statistics have width {stats.Features}", nameof(stats));
        if (!stats.HasGram)
            throw new ArgumentException(
                $"tensor '{tensorName}': SparseGPT needs the Gram matrix of the inputs; gather the statistics with withGram: true", nameof(stats));
        if (stats.Samples == 0)
            throw new ArgumentException($"tensor '{tensorName}': no calibration inputs were added to its statistics", nameof(stats));
        long target = Counts.Target(sparsity, rows * cols);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        if (!(dampening >= 0) || double.IsInfinity(dampening))
            throw new ArgumentOutOfRangeException(nameof(dampening), dampening, "dampening must be a finite number ≥ 0 (a fraction of the mean diagonal)");
        if (pattern is not null)
        {
            pattern.EnsureFits(tensorName, rows, cols);
            if (blockSize % pattern.M != 0)
                throw new ArgumentException(
                    $"tensor '{tensorName}': block size {blockSize} is not a multiple of the {pattern} pattern's group of {pattern.M}", nameof(blockSize));
        }
        var mask = HostWeights.StartMask(existing, rows, cols, tensorName);

        using var scope = NewDisposeScope();
        var device = weight.device;
        var w = weight.detach().to(ScalarType.Float32, device, copy: true);
        if (w.isnan().any().item<bool>()) HostWeights.RejectNaN(HostWeights.Read(weight), tensorName);
        var u = InverseHessianFactor(stats, w, dampening, tensorName);

        var sweep = new Sweep(w, u, mask, rows, cols, tensorName);
        double loss = pattern is null
            ? sweep.Unstructured(sparsity, target, blockSize)
            : sweep.SemiStructured(pattern, blockSize);
        return new SparseGptResult(w.MoveToOuterDisposeScope(), mask, loss);
    }

    /// <summary>
    /// U, upper triangular with UᵀU = (H + λI)⁻¹, fp32 on the weight's device. Zeroes the weight's
    /// dead columns.
    /// </summary>
    private static Tensor InverseHessianFactor(InputStatistics stats, Tensor w, double dampening, string tensorName)
    {
        var h = stats.Hessian(w.device);
        var diagonal = h.diagonal();
        var dead = diagonal.eq(0);
        diagonal.masked_fill_(dead, HeldScalars.One);
        w.masked_fill_(dead.unsqueeze(0), HeldScalars.Zero);
        using var lambda = (dampening * diagonal.mean().item<double>()).ToScalar(); // held to the end: implicit Scalars can be finalized mid-call
        diagonal.add_(lambda, HeldScalars.One);

        var (lower, info) = linalg.cholesky_ex(h);
        if (info.item<int>() != 0)
            throw new InvalidOperationException(
                $"tensor '{tensorName}': the Hessian of its {stats.Samples} calibration inputs is not positive definite with dampening {dampening}; " +
                "raise the dampening or add calibration samples");
        var inverse = cholesky_inverse(lower);
        var (inverseLower, inverseInfo) = linalg.cholesky_ex(inverse);
        if (inverseInfo.item<int>() != 0)
            throw new InvalidOperationException(
                $"tensor '{tensorName}': the inverse Hessian lost positive definiteness in fp64 with dampening {dampening}; raise the dampening");
        return inverseLower.t().to(ScalarType.Float32).contiguous();
    }

    /// <summary>The column sweep over one weight; owns no tensors (they live in the caller's scope).</summary>
    private sealed class Sweep(Tensor w, Tensor u, BitMask mask, long rows, long cols, string tensorName)
    {
        public double Unstructured(double sparsity, long target, int blockSize)
        {
            // Existing masked elements at or right of each column: they will be masked whatever the
            // blocks choose, so the blocks before them leave room for them.
            var existingFrom = new long[cols + 1];
            for (long r = 0; r < rows; r++)
                for (long c = 0; c < cols; c++)
                    if (mask[r * cols + c]) existingFrom[c]++;
            for (long c = cols - 1; c >= 0; c--) existingFrom[c] += existingFrom[c + 1];

            long maskedBefore = 0;
            double loss = 0;
            for (long i1 = 0; i1 < cols; i1 += blockSize)
            {
                using var blockScope = NewDisposeScope();
                long i2 = Math.Min(i1 + blockSize, cols), count = i2 - i1;
                var w1 = w.narrow(1, i1, count).clone();
                var u1 = u.narrow(0, i1, count).narrow(1, i1, count);
                var d = u1.diagonal();

                var keys = SaliencyKeys(w1, d);
                var blockMask = new BitMask(rows * count);
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < count; c++)
                        if (mask[r * cols + i1 + c]) blockMask.Set(r * count + c);

                // The prefix [0, i2) aims at its own exact count, kept within what the rest of the
                // layer can still make up (lo) and what the existing masks to the right will add (hi),
                // and within what this block can hold.
                long floor = maskedBefore + (existingFrom[i1] - existingFrom[i2]);
                long lo = target - rows * (cols - i2), hi = target - existingFrom[i2];
                long goal = Math.Clamp(Counts.Target(sparsity, rows * i2), lo, hi);
                goal = Math.Clamp(goal, floor, maskedBefore + rows * count);
                LocalSelection.MaskSmallest(keys, blockMask, goal - floor);
                maskedBefore = goal;

                var bits = new bool[rows * count];
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < count; c++)
                        if (blockMask[r * count + c])
                        {
                            bits[r * count + c] = true;
                            mask.Set(r * cols + i1 + c);
                        }
                var blockBits = tensor(bits, [rows, count], device: w.device);
                loss += Block(i1, count, w1, u1, d, blockBits, null);
            }
            return loss;
        }

        public double SemiStructured(NmPattern pattern, int blockSize)
        {
            double loss = 0;
            for (long i1 = 0; i1 < cols; i1 += blockSize)
            {
                using var blockScope = NewDisposeScope();
                long count = Math.Min(blockSize, cols - i1);
                var w1 = w.narrow(1, i1, count).clone();
                var u1 = u.narrow(0, i1, count).narrow(1, i1, count);
                var bits = new bool[rows * count];
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < count; c++)
                        bits[r * count + c] = mask[r * cols + i1 + c];
                var blockBits = tensor(bits, [rows, count], device: w.device);
                loss += Block(i1, count, w1, u1, u1.diagonal(), blockBits, pattern);
            }
            return loss;
        }

        /// <summary>Prunes and compensates one block's columns, then the columns right of it.</summary>
        private double Block(long i1, long count, Tensor w1, Tensor u1, Tensor d, Tensor blockBits, NmPattern? pattern)
        {
            var q1 = zeros_like(w1);
            var err1 = zeros_like(w1);
            using var zeroScalar = 0.0.ToScalar(); // held for the whole loop: an implicit Scalar may be finalized mid-call
            for (long i = 0; i < count; i++)
            {
                using var columnScope = NewDisposeScope();
                if (pattern is not null && i % pattern.M == 0) ChooseGroups(pattern, i1 + i, w1.narrow(1, i, pattern.M), d.narrow(0, i, pattern.M), blockBits.narrow(1, i, pattern.M));

                var column = w1.select(1, i);
                var q = column.masked_fill(blockBits.select(1, i), zeroScalar);
                var err = column.sub(q).div_(d[i]);
                q1.select(1, i).copy_(q);
                err1.select(1, i).copy_(err);
                // OBS: the remaining columns of the block absorb this column's error.
                w1.narrow(1, i, count - i).sub_(err.unsqueeze(1).mm(u1.narrow(0, i, 1).narrow(1, i, count - i)));
            }
            w.narrow(1, i1, count).copy_(q1);
            long right = cols - (i1 + count);
            if (right > 0)
                w.narrow(1, i1 + count, right).sub_(err1.mm(u.narrow(0, i1, count).narrow(1, i1 + count, right)));
            return err1.square().sum().item<float>() / 2.0;
        }

        /// <summary>Masks the N smallest saliencies in every row of the group starting at column <paramref name="first"/>.</summary>
        private void ChooseGroups(NmPattern pattern, long first, Tensor group, Tensor d, Tensor groupBits)
        {
            int m = pattern.M;
            var keys = SaliencyKeys(group, d);
            var scratch = new ulong[m];
            var picked = new int[pattern.N];
            var bits = new bool[rows * m];
            for (long r = 0; r < rows; r++)
            {
                long start = r * cols + first;
                int need = pattern.N - SmallestSelection.CountSet(mask, start, m);
                int got = SmallestSelection.Pick(keys.AsSpan((int)(r * m), m), mask, start, need, scratch, picked);
                for (int k = 0; k < got; k++) mask.Set(start + picked[k]);
                for (int j = 0; j < m; j++) bits[r * m + j] = mask[start + j];
            }
            groupBits.copy_(tensor(bits, [rows, m], device: w.device));
        }

        /// <summary>w² / d² per element of <paramref name="block"/> [rows, k], as selection keys, row-major.</summary>
        private uint[] SaliencyKeys(Tensor block, Tensor d)
        {
            using var scope = NewDisposeScope();
            var saliency = block.square().div_(d.square().unsqueeze(0)).cpu().data<float>().ToArray();
            var keys = new uint[saliency.Length];
            for (int i = 0; i < keys.Length; i++)
            {
                if (float.IsNaN(saliency[i]))
                    throw new InvalidOperationException($"tensor '{tensorName}': SparseGPT's saliency became NaN (infinite weights?)");
                keys[i] = ScoreKeys.FromScore(saliency[i]);
            }
            return keys;
        }
    }
}
