using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Grains.Compute;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Heads;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;
using Shears.Pruning.Size;
using Shears.Pruning.Structured;

namespace Shears.Grains.Shards;

/// <summary>
/// Holds the weights of one shard in memory (never as grain state), computes its statistics and
/// applies the coordinator's decisions. All tensor work runs on the silo's compute executor.
/// </summary>
[ShardPlacement]
public sealed partial class ShardGrain(
    ComputeExecutor compute, ComputeDevice device, ManifestCache manifests, ILocalSiloDetails silo,
    Microsoft.Extensions.Options.IOptions<ShearsOptions> options, ILogger<ShardGrain> logger)
    : Grain, IShardGrain
{
    private ShardAssignment? _assignment;
    private CheckpointManifest? _manifest;
    private LoadedPiece[] _pieces = [];
    private StageRunner? _stage;

    // The selection statistics of the round under way, per piece, while its mask and weights stay as they were:
    // the histograms answer CountAsync, and the counts let ApplyAsync skip its checking pass, instead of more passes
    // over the weights. Cleared by everything that changes masks or weights; each entry also checks the mask count.
    private readonly Dictionary<(int Piece, int Level, uint Prefix), KeptHistogram> _histograms = [];
    private readonly Dictionary<int, (uint Threshold, long Equal, long MaskCount)> _equal = [];

    private sealed record KeptHistogram(long[] Counts, bool LowZero, long MaskCount);

    private long CachedHistogramElements => options.Value.CachedHistogramElements;

    private void ForgetStatistics()
    {
        _histograms.Clear();
        _equal.Clear();
    }

    private ShardAssignment Assignment => _assignment ?? throw new ShardNotLoadedException($"shard {this.GetPrimaryKeyString()} has not been loaded on {silo.SiloAddress}");

    async Task<ShardInfo> IShardGrain.LoadAsync(ShardAssignment assignment)
    {
        var stopwatch = Stopwatch.StartNew();
        ForgetStatistics();
        bool reused = _assignment is { } loaded && _pieces.Length == assignment.Pieces.Count && SameData(loaded, assignment);
        // Kept weights were read before, not now, unless they were trained and must be read again.
        bool read = !reused || _stage is { Trained: true };
        if (reused)
        {
            // Already holding these weights: only go back to the committed masks.
            await compute.RunAsync(() => RestoreMasks(assignment));
            _assignment = assignment;
        }
        else
        {
            _assignment = null;
            _stage?.Dispose();
            _stage = null;
            foreach (var piece in _pieces) piece.Dispose();
            _pieces = [];
            (_manifest, _pieces, var first) = await compute.RunAsync(() => Load(assignment));
            foreach (var (piece, kept) in first) _histograms[(piece, 0, 0)] = kept;
            if (assignment.Stage is { } plan)
                _stage = await compute.RunAsync(() => BuildStage(assignment, plan));
            _assignment = assignment;
        }
        _stage?.Reset();
        _worker?.Reset();
        long bytes = _pieces.Sum(p => (long)p.ByteLength);
        if (read) ShearsMetrics.BytesRead.Add(bytes, new KeyValuePair<string, object?>("run", assignment.RunId));
        ShearsMetrics.Shard(assignment.RunId, this.GetPrimaryKeyString(), _pieces.Sum(p => p.Mask.CountSet()));
        logger.LogInformation("Shard {Shard} loaded {Pieces} pieces ({Bytes} bytes) in {Seconds:F2}s", this.GetPrimaryKeyString(), _pieces.Length, bytes, stopwatch.Elapsed.TotalSeconds);
        return new ShardInfo
        {
            Silo = silo.SiloAddress.ToString(),
            Elements = _pieces.Sum(p => p.Piece.Elements),
            BytesRead = bytes,
            MaskedPerPiece = _pieces.Select(p => p.Mask.CountSet()).ToArray(),
            // Only progressive allocation ranks layers by mean |w|: skip the pass otherwise.
            AbsSumPerPiece = assignment.Spec.Scope == RunOptions.Scopes.Progressive ? _pieces.Select(p => AbsSum(p)).ToArray() : new double[_pieces.Length],
        };
    }

    private StageRunner BuildStage(ShardAssignment assignment, StagePlan plan)
    {
        var manifest = _manifest!;
        var own = _pieces.Select(p => p.Entry.Name).ToHashSet(StringComparer.Ordinal);
        var frozen = plan.Tensors.Where(n => !own.Contains(n))
            .ToDictionary(n => n, n => (manifest.Get(n), CheckpointReader.ReadTensor(manifest, manifest.Get(n))), StringComparer.Ordinal);
        if (plan.Model == StagePlan.BertModel)
        {
            var encoder = manifests.Encoder(manifest.PathOf(manifest.Files[0].FileName));
            return new StageRunner(plan, null, device.Device, frozen, encoder.Config, encoder.Names);
        }
        var config = Shears.Pruning.Models.LlamaConfig.Load(manifest.Root);
        return new StageRunner(plan, config, device.Device, frozen);
    }

    // Every assignment arrives as a copy: compared by content, or a shard that kept its weights would reload them.
    private static bool SameData(ShardAssignment a, ShardAssignment b) =>
        a.RunId == b.RunId && a.ModelPath == b.ModelPath && a.Pieces.SequenceEqual(b.Pieces) && a.Spec.SameAs(b.Spec);

    private void RestoreMasks(ShardAssignment assignment)
    {
        if (_stage is { Trained: true })
        {
            // The weights changed since the committed round (fine-tuning, SparseGPT): start again from the
            // checkpoint's bytes and the round's persisted weights.
            var fresh = Load(assignment).Pieces;
            for (int i = 0; i < _pieces.Length; i++)
            {
                _pieces[i].Dispose();
                _pieces[i] = fresh[i];
            }
            return;
        }
        // The bytes are the checkpoint's (no step writes into them unless it trains): only the masks go back.
        for (int i = 0; i < _pieces.Length; i++)
            _pieces[i].Mask = assignment.RestoreRound > 0
                ? BitMask.FromBytes(File.ReadAllBytes(MaskPath(assignment, i, assignment.RestoreRound)), _pieces[i].Piece.Elements)
                : new BitMask(_pieces[i].Piece.Elements);
    }

    /// <summary>
    /// Reads (or maps) the assignment's pieces and refuses NaN. A large mapped piece of a magnitude run with no mask yet
    /// is read once for both: its first histogram of round 1 is counted while checking, and kept for that round (NaN
    /// and +Inf fall in the top buckets, which send the piece through the exact check).
    /// </summary>
    private (CheckpointManifest Manifest, LoadedPiece[] Pieces, List<(int Piece, KeptHistogram Kept)> Histograms) Load(ShardAssignment assignment)
    {
        var first = new List<(int, KeptHistogram)>();
        var manifest = manifests.Get(assignment.ModelPath);
        var spec = assignment.Spec;
        bool scored = spec.Pattern == RunOptions.Patterns.Unstructured && spec.Method is RunOptions.Methods.Magnitude or RunOptions.Methods.Random;
        // Runs that never change weights read them in place from a map of the checkpoint; fine-tuning, calibrated
        // methods and head scoring hold copies of their own.
        bool mapped = spec.FinetuneSteps == 0 && !spec.NeedsCalibration && spec.Pattern != RunOptions.Patterns.Heads;
        var pieces = new LoadedPiece[assignment.Pieces.Count];
        try
        {
            for (int i = 0; i < pieces.Length; i++)
            {
                var piece = assignment.Pieces[i];
                var entry = manifest.Get(piece.Tensor);
                int size = entry.DType.ElementSize();
                int length = checked((int)(piece.Elements * size));
                long byteStart = piece.RowStart * piece.RowElements * size;
                long elementOffset = piece.RowStart * piece.RowElements;
                var mask = new BitMask(piece.Elements);
                string? weights = null;
                if (assignment.RestoreRound > 0)
                {
                    string path = MaskPath(assignment, i, assignment.RestoreRound);
                    mask = BitMask.FromBytes(File.ReadAllBytes(path), piece.Elements);
                    // A fine-tuned round persisted its weights beside its masks.
                    weights = Path.ChangeExtension(path, ".weights");
                    if (!File.Exists(weights)) weights = null;
                }
                var method = scored ? spec.Method : null;
                if (mapped && weights is null)
                {
                    var map = MappedRange.Map(manifest, entry, byteStart, length);
                    pieces[i] = new LoadedPiece(piece, entry, null, map, mask, method, spec.Seed);
                    if (pieces[i].KeysFromBytes && assignment.RestoreRound == 0 && piece.Elements >= CachedHistogramElements)
                    {
                        var counts = new long[RadixSelect.Buckets];
                        bool lowZero = RadixSelect.CheckedHistogramOfWeights(map.Span, entry.DType, mask, 0, counts, entry.Name, elementOffset);
                        first.Add((i, new KeptHistogram(counts, lowZero, 0)));
                        continue;
                    }
                    // NaN is refused whatever the method, before any round.
                    ScoreKeys.CheckNoNaN(map.Span, entry.DType, entry.Name, elementOffset);
                    continue;
                }
                // Every byte is read into it, from the checkpoint or from the committed round's trained weights: no need
                // to clear it first.
                var raw = GC.AllocateUninitializedArray<byte>(length);
                using var trained = weights is null ? null : File.OpenHandle(weights);
                if (trained is not null && RandomAccess.GetLength(trained) != length)
                    throw new InvalidDataException($"{weights} holds {RandomAccess.GetLength(trained)} bytes, expected {length}");
                for (int at = 0; at < raw.Length; at += IoChunkBytes)
                {
                    var chunk = raw.AsSpan(at, Math.Min(IoChunkBytes, raw.Length - at));
                    if (trained is null) CheckpointReader.ReadTensorRange(manifest, entry, byteStart + at, chunk);
                    else if (RandomAccess.Read(trained, chunk, at) != chunk.Length) throw new InvalidDataException($"{weights} ended early at byte {at}");
                    // Checked while the chunk is still in cache.
                    ScoreKeys.CheckNoNaN(chunk, entry.DType, entry.Name, elementOffset + at / size);
                }
                pieces[i] = new LoadedPiece(piece, entry, raw, null, mask, method, spec.Seed);
            }
            return (manifest, pieces, first);
        }
        catch
        {
            foreach (var piece in pieces) piece?.Dispose();
            throw;
        }
    }

    /// <summary>Bytes read or written at a time: a multiple of 64 elements of any dtype, small enough to stay in cache.</summary>
    private const int IoChunkBytes = 4 << 20;

    /// <summary>Σ|w| over the piece (progressive allocation ranks layers by mean |w|).</summary>
    private static double AbsSum(LoadedPiece piece)
    {
        int size = piece.Entry.DType.ElementSize();
        long n = piece.Piece.Elements;
        var scratch = new uint[RadixSelect.ChunkKeys];
        double sum = 0;
        for (long start = 0; start < n; start += scratch.Length)
        {
            var keys = scratch.AsSpan(0, (int)Math.Min(scratch.Length, n - start));
            ScoreKeys.Magnitude(piece.Bytes.Slice((int)(start * size), keys.Length * size), piece.Entry.DType, keys, piece.Entry.Name, piece.ElementOffset + start);
            double partial = 0;
            foreach (uint key in keys) partial += ScoreKeys.ToScore(key);
            sum += partial;
        }
        return sum;
    }

    Task IShardGrain.ReleaseAsync()
    {
        DropEverything();
        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    /// <summary>A grain that deactivates without ReleaseAsync (idle, or its run's coordinator lost) still unmaps its weights.</summary>
    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        DropEverything();
        return Task.CompletedTask;
    }

    private void DropEverything()
    {
        ForgetStatistics();
        _worker?.Reset();
        _stage?.Dispose();
        _stage = null;
        foreach (var piece in _pieces) piece.Dispose();
        _pieces = [];
        _manifest = null;
    }
}
