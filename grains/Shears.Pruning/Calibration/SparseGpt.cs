using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Quantization;
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
    /// <summary>
    /// The quantized weights in the joint mode (<see cref="SparseGpt.PruneAndQuantize"/>), whose dequantized values
    /// <see cref="Weight"/> holds; their error is against the input weight with the mask applied. Null when only pruning.
    /// </summary>
    public QuantizedRows? Quantized { get; init; }

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
/// <para>With a <c>count</c> for the tensor instead (per-layer allocation such as OWL's), the layer ends at exactly that
/// count and the blocks' prefix targets use count / (rows × cols) as the sparsity.</para>
/// <para>N:M mask: at the first column of each group of M, per row, the N smallest w²/U_jj² of the
/// group's current weights (ties by lower column), fewer where the existing mask already holds some;
/// <c>sparsity</c> is then only checked to be in [0, 1], the pattern decides the count.</para>
/// </remarks>
public static class SparseGpt
{
    public static SparseGptResult Prune(
        Tensor weight, InputStatistics stats, double sparsity, NmPattern? pattern = null,
        int blockSize = 128, double dampening = 0.01, BitMask? existing = null, string tensorName = "weight", long? count = null) =>
        Run(weight, stats, sparsity, pattern, blockSize, dampening, existing, tensorName, null, TensorDType.F32, count);

    /// <summary>
    /// The paper's joint sparsification and quantization: the same sweep and masks as <see cref="Prune"/>, but every
    /// column's unpruned weights are quantized with <paramref name="scheme"/> (see <see cref="Gptq"/> for the groups
    /// and the rounding to <paramref name="dtype"/>) and one error update spreads both the pruning and the rounding.
    /// Pruned weights end at q = zero point (exactly 0.0 after dequantization). A group's parameters are taken when the
    /// sweep reaches its first column, with the weights masked by then counted as 0: the existing mask, and what the
    /// sweep has chosen so far, an unstructured mask a block at a time at the block's first column, an N:M mask a group
    /// of M at a time (so a quantization group inside one block sees all of an unstructured mask; a per-channel scheme,
    /// one group from column 0, sees the first block's or the first M columns').
    /// </summary>
    public static SparseGptResult PruneAndQuantize(
        Tensor weight, InputStatistics stats, double sparsity, QuantScheme scheme, TensorDType dtype, NmPattern? pattern = null,
        int blockSize = 128, double dampening = 0.01, BitMask? existing = null, string tensorName = "weight", long? count = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        return Run(weight, stats, sparsity, pattern, blockSize, dampening, existing, tensorName, scheme, dtype, count);
    }

    private static SparseGptResult Run(
        Tensor weight, InputStatistics stats, double sparsity, NmPattern? pattern, int blockSize, double dampening,
        BitMask? existing, string tensorName, QuantScheme? scheme, TensorDType dtype, long? count)
    {
        var (rows, cols) = HostWeights.Shape(weight, tensorName);
        InverseHessian.CheckStatistics(stats, cols, tensorName, "SparseGPT");
        long target = Counts.Target(sparsity, rows * cols);
        if (count is long given)
        {
            // A count for the tensor (per-layer allocation): the blocks' prefix targets follow its own sparsity.
            if (given < 0 || given > rows * cols)
                throw new ArgumentOutOfRangeException(nameof(count), given, $"tensor '{tensorName}' has {rows * cols} elements; {given} cannot be masked");
            if (pattern is not null) throw new ArgumentException($"tensor '{tensorName}': a count applies to unstructured masks, not {pattern}", nameof(count));
            target = given;
            sparsity = rows * cols == 0 ? 0 : (double)given / (rows * cols);
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        InverseHessian.CheckDampening(dampening);
        if (scheme is not null) ColumnQuantizer.CheckDType(dtype, tensorName);
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

        using var quantizer = scheme is null ? null : new ColumnQuantizer(scheme, dtype, rows, cols, device, tensorName);
        var sweep = new Sweep(w, u, mask, rows, cols, tensorName, quantizer);
        double loss = pattern is null
            ? sweep.Unstructured(sparsity, target, blockSize)
            : sweep.SemiStructured(pattern, blockSize);
        QuantizedRows? quantized = null;
        if (quantizer is not null)
        {
            var reference = HostWeights.Read(weight);
            for (int i = 0; i < reference.Length; i++) if (mask[i]) reference[i] = 0;
            quantized = new QuantizedRows(scheme!, dtype, (int)rows, (int)cols, quantizer.Values(), quantizer.Groups, reference);
        }
        return new SparseGptResult(w.MoveToOuterDisposeScope(), mask, loss) { Quantized = quantized };
    }

    /// <summary>
    /// U, upper triangular with UᵀU = (H + λI)⁻¹, fp32 on the weight's device. Zeroes the weight's
    /// dead columns.
    /// </summary>
    private static Tensor InverseHessianFactor(InputStatistics stats, Tensor w, double dampening, string tensorName)
    {
        var u = InverseHessian.UpperFactor(stats.Hessian(w.device), w, dampening, out var failure);
        return failure switch
        {
            InverseHessian.Failure.None => u!,
            InverseHessian.Failure.Hessian => throw new InvalidOperationException(
                $"tensor '{tensorName}': the Hessian of its {stats.Samples} calibration inputs is not positive definite with dampening {dampening}; " +
                "raise the dampening or add calibration samples"),
            _ => throw new InvalidOperationException(
                $"tensor '{tensorName}': the inverse Hessian lost positive definiteness in fp64 with dampening {dampening}; raise the dampening"),
        };
    }

    /// <summary>The column sweep over one weight; owns no tensors (they live in the caller's scope).</summary>
    private sealed class Sweep(Tensor w, Tensor u, BitMask mask, long rows, long cols, string tensorName, ColumnQuantizer? quantizer)
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
                loss += Block(i1, count, w1, blockBits, null);
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
                var bits = new bool[rows * count];
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < count; c++)
                        bits[r * count + c] = mask[r * cols + i1 + c];
                var blockBits = tensor(bits, [rows, count], device: w.device);
                loss += Block(i1, count, w1, blockBits, pattern);
            }
            return loss;
        }

        /// <summary>Prunes (and quantizes) and compensates one block's columns, then the columns right of it.</summary>
        private double Block(long i1, long count, Tensor w1, Tensor blockBits, NmPattern? pattern)
        {
            Action<long, Tensor, Tensor>? choose = pattern is null ? null : (i, block, diagonal) =>
            {
                if (i % pattern.M == 0) ChooseGroups(pattern, i1 + i, block.narrow(1, i, pattern.M), diagonal.narrow(0, i, pattern.M), blockBits.narrow(1, i, pattern.M));
            };
            return ObsBlock.Sweep(w, u, i1, count, w1, blockBits, mask, quantizer, choose);
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
