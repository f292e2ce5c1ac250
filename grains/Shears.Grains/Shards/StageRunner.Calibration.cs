using System.Runtime.InteropServices;
using Shears.Contracts;
using Shears.Engine.Shards;
using Shears.Pruning.Allocation;
using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Models;
using Shears.Pruning.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Grains.Shards;

// Wanda, SparseGPT and GPTQ on the stage's layer, from the calibration inputs the layer keeps.
internal sealed partial class StageRunner
{
    private readonly List<(Tensor Hidden, long[][] TokenIds)> _calibration = [];

    /// <summary>Keeps a batch of this layer's calibration inputs (on the CPU until used).</summary>
    public void Collect(ActivationBatch batch)
    {
        var hidden = tensor(MemoryMarshal.Cast<byte, float>(batch.Hidden).ToArray(), batch.Shape, ScalarType.Float32, CPU).DetachFromDisposeScope();
        _calibration.Add((hidden, batch.TokenIds));
    }

    /// <summary>
    /// Wanda or SparseGPT on this layer's pieces from its kept calibration inputs; returns those inputs passed through
    /// the pruned layer (the next layer's calibration inputs). <paramref name="joint"/>: SparseGPT prunes and quantizes
    /// the pieces named in <paramref name="quantized"/> in one sweep (the paper's joint mode); the pieces then hold the
    /// dequantized weights, and the quantized rows are returned per piece (null for a piece pruned only).
    /// <paramref name="targetMasked"/>: per piece, its count (per-layer allocation) instead of <paramref name="sparsity"/>.
    /// </summary>
    public (List<ActivationBatch> Next, QuantizedRows?[]? Quantized) PruneCalibrated(
        IReadOnlyList<LoadedPiece> pieces, string method, (int N, int M) nm, double sparsity, QuantScheme? joint = null, IReadOnlySet<string>? quantized = null,
        long[]? targetMasked = null)
    {
        if (targetMasked is not null && targetMasked.Length != pieces.Count)
            throw new ArgumentException($"{targetMasked.Length} targets for {pieces.Count} pieces", nameof(targetMasked));
        CheckCalibrated($"--method {method}");
        bool sparseGpt = method == RunOptions.Methods.SparseGpt;
        if (joint is not null && !sparseGpt) throw new ArgumentException($"--method {method} has no joint quantization; SparseGPT's has", nameof(joint));
        var pattern = nm.M > 0 ? new NmPattern(nm.N, nm.M) : null;
        var rows = joint is null ? null : new QuantizedRows?[pieces.Count];
        var stats = GatherStatistics(pieces, pieces, withGram: sparseGpt);
        try
        {
            for (int i = 0; i < pieces.Count; i++)
            {
                var piece = pieces[i];
                string name = piece.Entry.Name;
                // Wanda and SparseGPT take W as [out, in]; an encoder's matrices are stored [in, out].
                bool stored = IsBert;
                using var weight = stored ? StageParameters[name].detach().t().contiguous() : StageParameters[name].alias();
                var existing = stored ? Transpose(piece.Mask, piece.Rows, piece.Cols) : piece.Mask;
                BitMask mask;
                if (sparseGpt)
                {
                    bool quantizes = joint is not null && quantized!.Contains(name);
                    using var result = quantizes
                        ? SparseGpt.PruneAndQuantize(weight, stats[name], sparsity, joint!, piece.Entry.DType, pattern, existing: existing, tensorName: name, count: targetMasked?[i])
                        : SparseGpt.Prune(weight, stats[name], sparsity, pattern, existing: existing, tensorName: name, count: targetMasked?[i]);
                    mask = result.Mask;
                    if (quantizes) rows![i] = result.Quantized;
                    using var cpu = (stored ? result.Weight.detach().t() : result.Weight.detach()).cpu().to(ScalarType.Float32).contiguous();
                    piece.Mask = stored ? Transpose(mask, piece.Cols, piece.Rows) : mask;
                    ShardMath.WriteFloats(cpu.data<float>().ToArray(), piece);
                    Trained = true;
                }
                else
                {
                    mask = pattern is not null ? Wanda.MaskNm(weight, stats[name], pattern, existing, name)
                        : targetMasked is not null ? Wanda.MaskCount(weight, stats[name], targetMasked[i], existing, name)
                        : Wanda.Mask(weight, stats[name], sparsity, existing, name);
                    piece.Mask = stored ? Transpose(mask, piece.Cols, piece.Rows) : mask;
                }
            }
        }
        finally
        {
            foreach (var s in stats.Values.Distinct()) s.Dispose();
        }
        return (PassOnCalibration(pieces), rows);
    }

    /// <summary>
    /// GPTQ on this layer's pieces named in <paramref name="quantized"/>, from its kept calibration inputs (which the
    /// layers before it computed with their quantized weights), the masks kept exactly. Returns the quantized rows per
    /// piece (null for a piece not quantized), [out, in] as the loaders read them; the pieces keep their pruned weights.
    /// The kept inputs stay for <see cref="PassOnCalibration"/>.
    /// </summary>
    public QuantizedRows?[] QuantizeCalibrated(IReadOnlyList<LoadedPiece> pieces, IReadOnlySet<string> quantized, QuantScheme scheme, bool actOrder)
    {
        CheckCalibrated("--quant-method gptq");
        var rows = new QuantizedRows?[pieces.Count];
        var targets = pieces.Where(p => quantized.Contains(p.Entry.Name)).ToArray();
        if (targets.Length == 0) return rows;
        var stats = GatherStatistics(pieces, targets, withGram: true);
        try
        {
            for (int i = 0; i < pieces.Count; i++)
            {
                var piece = pieces[i];
                string name = piece.Entry.Name;
                if (!quantized.Contains(name)) continue;
                bool stored = IsBert;
                using var weight = stored ? StageParameters[name].detach().t().contiguous() : StageParameters[name].alias();
                var mask = stored ? Transpose(piece.Mask, piece.Rows, piece.Cols) : piece.Mask;
                using var result = Gptq.Quantize(weight, stats[name], scheme, piece.Entry.DType, mask, actOrder: actOrder, tensorName: name);
                rows[i] = result.Quantized;
            }
        }
        finally
        {
            foreach (var s in stats.Values.Distinct()) s.Dispose();
        }
        return rows;
    }

    /// <summary>
    /// OWL: the outliers among the Wanda scores of all this layer's pieces together, from its kept calibration inputs
    /// and its weights as they are; returns the count and those inputs passed through the unchanged layer.
    /// </summary>
    public (OutlierCount Count, List<ActivationBatch> Next) CountOutliers(IReadOnlyList<LoadedPiece> pieces, double threshold)
    {
        CheckCalibrated("--scope owl");
        var stats = GatherStatistics(pieces, pieces, withGram: false);
        OutlierCount count;
        try
        {
            var scores = new List<float[]>(pieces.Count);
            foreach (var piece in pieces)
            {
                string name = piece.Entry.Name;
                // Scores of W as [out, in]; the order of the elements does not change the count.
                using var weight = IsBert ? StageParameters[name].detach().t().contiguous() : StageParameters[name].alias();
                var values = Wanda.ScoreValues(weight, stats[name], name);
                var mask = IsBert ? Transpose(piece.Mask, piece.Rows, piece.Cols) : piece.Mask;
                for (int j = 0; j < values.Length; j++) if (mask[j]) values[j] = 0;
                scores.Add(values);
            }
            count = LayerOutliers.Count(scores, threshold);
        }
        finally
        {
            foreach (var s in stats.Values.Distinct()) s.Dispose();
        }
        return (count, PassOnCalibration(pieces));
    }

    /// <summary>
    /// --pattern layers: the kept calibration inputs run through the layer as it is; returns Σ (1 − cos(input, output))
    /// over every real token (right padding left out; in double) with the count of tokens, and the outputs, which are
    /// the next layer's calibration inputs (ShortGPT's block influence, Men et al. 2024). The kept inputs are dropped.
    /// </summary>
    public (double Sum, long Tokens, List<ActivationBatch> Next) BlockInfluence(IReadOnlyList<LoadedPiece> pieces)
    {
        CheckCalibrated("--pattern layers");
        DisposeStage();
        var next = new List<ActivationBatch>();
        double sum = 0;
        long tokens = 0;
        Build(pieces);
        using (no_grad())
        {
            foreach (var (hidden, ids) in _calibration)
            {
                using var scope = NewDisposeScope();
                var input = hidden.to(device);
                var output = Run(input, new ActivationBatch { TokenIds = ids });
                var cos = nn.functional.cosine_similarity(input.to(ScalarType.Float64), output.to(ScalarType.Float64), dim: -1).cpu();
                var values = cos.data<double>().ToArray();
                long length = cos.shape[1];
                for (int b = 0; b < ids.Length; b++)
                    for (int t = 0; t < ids[b].Length; t++) sum += 1 - values[b * length + t];
                tokens += ids.Sum(s => (long)s.Length);
                next.Add(new ActivationBatch { TokenIds = ids, Hidden = Bytes(output), Shape = output.shape });
            }
        }
        DropCalibration();
        return (sum, tokens, next);
    }

    private void CheckCalibrated(string what)
    {
        if (Plan.Kind != StagePlan.LayerKind) throw new InvalidOperationException($"{what} works on the model's layers; this shard runs the {Plan.Kind}");
        if (_calibration.Count == 0) throw new InvalidOperationException($"layer {Plan.Layer} received no calibration inputs");
    }

    /// <summary>
    /// Runs the kept calibration inputs through the layer as built now and gathers the inputs of each of
    /// <paramref name="targets"/> (valid positions only), with the Gram matrix when <paramref name="withGram"/>.
    /// Weights that read the same input (q/k/v, gate/up) share one set, gathered once per batch: the layer hands the
    /// same tensor to each of their captures in a row. The caller disposes the distinct sets.
    /// </summary>
    private Dictionary<string, InputStatistics> GatherStatistics(IReadOnlyList<LoadedPiece> pieces, IReadOnlyList<LoadedPiece> targets, bool withGram)
    {
        // Input features: columns of an [out, in] decoder weight, rows of an encoder's stored [in, out] matrix.
        var features = targets.ToDictionary(p => p.Entry.Name, p => IsBert ? p.Rows : p.Cols, StringComparer.Ordinal);
        var stats = new Dictionary<string, InputStatistics>(StringComparer.Ordinal);
        Tensor? lastInput = null;
        InputStatistics? lastStats = null;
        try
        {
            Build(pieces);
            Action<string, Tensor> capture = (name, x) =>
            {
                if (!features.TryGetValue(name, out long width)) return;
                bool sameInput = ReferenceEquals(x, lastInput) && lastStats is not null && lastStats.Features == width;
                if (!stats.TryGetValue(name, out var s))
                    stats[name] = s = sameInput ? lastStats! : new InputStatistics(width, withGram);
                if (!(sameInput && ReferenceEquals(s, lastStats))) AddValidPositions(s, x, _current!);
                (lastInput, lastStats) = (x, s);
            };
            if (_stage is LlamaDecoderLayer llamaLayer) llamaLayer.Capture = capture;
            var bertLayer = _bert as Shears.Pruning.Encoders.BertLayer;
            if (bertLayer is not null) bertLayer.Capture = capture;
            try
            {
                using (no_grad())
                {
                    foreach (var (hidden, ids) in _calibration)
                    {
                        using var scope = NewDisposeScope();
                        _current = ids;
                        Run(hidden.to(device), new ActivationBatch { TokenIds = ids });
                    }
                }
            }
            finally
            {
                if (_stage is LlamaDecoderLayer done) done.Capture = null;
                if (bertLayer is not null) bertLayer.Capture = null;
                _current = null;
            }
            foreach (var name in features.Keys)
                if (!stats.ContainsKey(name)) throw new InvalidOperationException($"layer {Plan.Layer}: no calibration input reached '{name}'");
            return stats;
        }
        catch
        {
            foreach (var s in stats.Values.Distinct()) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The kept calibration inputs passed through the layer as its weights are now (the pieces', or those given to
    /// <see cref="UseWeights"/>): the next layer's calibration inputs. The kept inputs are dropped.
    /// </summary>
    public List<ActivationBatch> PassOnCalibration(IReadOnlyList<LoadedPiece> pieces)
    {
        DisposeStage();
        var next = new List<ActivationBatch>();
        Build(pieces);
        using (no_grad())
        {
            foreach (var (hidden, ids) in _calibration)
            {
                using var scope = NewDisposeScope();
                var output = Run(hidden.to(device), new ActivationBatch { TokenIds = ids });
                next.Add(new ActivationBatch { TokenIds = ids, Hidden = Bytes(output), Shape = output.shape });
            }
        }
        DropCalibration();
        return next;
    }

    private long[][]? _current;

    private static BitMask Transpose(BitMask mask, long rows, long cols) => mask.Transposed(rows, cols);

    private static void AddValidPositions(InputStatistics stats, Tensor x, long[][] tokenIds)
    {
        // Right padding is not data: each sequence contributes its own positions only.
        for (int b = 0; b < tokenIds.Length; b++)
        {
            using var rows = x[b].narrow(0, 0, tokenIds[b].Length);
            stats.Add(rows);
        }
    }

    private void DropCalibration()
    {
        foreach (var (hidden, _) in _calibration) hidden.Dispose();
        _calibration.Clear();
    }
}
