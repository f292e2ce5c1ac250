using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Engine.Shards;

/// <summary>What a shard loads: its pieces of a checkpoint, and the masks of the committed round to start from.</summary>
public sealed record ShardLoad
{
    public required CheckpointManifest Manifest { get; init; }
    public required IReadOnlyList<ShardPiece> Pieces { get; init; }
    public required RunRecipe Recipe { get; init; }
    /// <summary>The run changes weights (fine-tuning): the shard holds copies of its own instead of a map of the checkpoint.</summary>
    public bool ChangesWeights { get; init; }
    public HeadGeometry? Heads { get; init; }
    /// <summary>Per piece, the mask file of the committed round (weights trained in that round lie beside it as .weights); null when no round was committed.</summary>
    public IReadOnlyList<string>? RestoredMasks { get; init; }
    /// <summary>Pieces of at least this many elements keep their histograms for the round's later questions.</summary>
    public long CachedHistogramElements { get; init; } = 1 << 20;
}

/// <summary>
/// One shard's side of selection, free of any host: its pieces and masks, the statistics the coordinator asks for,
/// and the decisions it sends back. Not thread-safe: its host runs one call at a time.
/// </summary>
public sealed partial class ShardSelection : IDisposable
{
    private ShardSelection(ShardLoad load, LoadedPiece[] pieces)
    {
        _load = load;
        Pieces = pieces;
    }

    private ShardLoad _load;

    internal LoadedPiece[] Pieces { get; }

    public CheckpointManifest Manifest => _load.Manifest;
    public RunRecipe Recipe => _load.Recipe;
    public int PieceCount => Pieces.Length;
    public long Elements => Pieces.Sum(p => p.Piece.Elements);
    public long ByteLength => Pieces.Sum(p => (long)p.ByteLength);
    public long[] MaskedPerPiece => Pieces.Select(p => p.Mask.CountSet()).ToArray();

    /// <summary>
    /// Reads (or maps) the pieces and refuses NaN. A large mapped piece of a magnitude run with no mask yet is read
    /// once for both: its first histogram of round 1 is counted while checking, and kept for that round (NaN and +Inf
    /// fall in the top buckets, which send the piece through the exact check).
    /// </summary>
    public static ShardSelection Load(ShardLoad load)
    {
        var (pieces, first) = Read(load);
        var shard = new ShardSelection(load, pieces);
        foreach (var (piece, kept) in first) shard._histograms[(piece, 0, 0)] = kept;
        return shard;
    }

    /// <summary>
    /// Goes back to the committed round of <paramref name="load"/> while keeping the weights already held; when they
    /// changed since (<paramref name="weightsChanged"/>: fine-tuning, SparseGPT) they are read again.
    /// </summary>
    public void Restore(ShardLoad load, bool weightsChanged)
    {
        if (load.Pieces.Count != Pieces.Length) throw new ArgumentException($"{load.Pieces.Count} pieces to restore, the shard holds {Pieces.Length}", nameof(load));
        ForgetStatistics();
        _load = load;
        if (weightsChanged)
        {
            var fresh = Read(load).Pieces;
            for (int i = 0; i < Pieces.Length; i++)
            {
                Pieces[i].Dispose();
                Pieces[i] = fresh[i];
            }
            return;
        }
        // The bytes are the checkpoint's (no step writes into them unless it trains): only the masks go back.
        for (int i = 0; i < Pieces.Length; i++)
            Pieces[i].Mask = load.RestoredMasks is { } paths
                ? BitMask.FromBytes(File.ReadAllBytes(paths[i]), Pieces[i].Piece.Elements)
                : new BitMask(Pieces[i].Piece.Elements);
    }

    private static (LoadedPiece[] Pieces, List<(int Piece, KeptHistogram Kept)> First) Read(ShardLoad load)
    {
        var first = new List<(int, KeptHistogram)>();
        var manifest = load.Manifest;
        var recipe = load.Recipe;
        // Runs that never change weights read them in place from a map of the checkpoint; fine-tuning, calibrated
        // methods, head and neuron scoring hold copies of their own.
        bool mapped = !load.ChangesWeights && !recipe.Calibrated && recipe.Pattern is not (PrunePattern.Heads or PrunePattern.Neurons);
        ScoreMethod? method = recipe.ScoresElements ? recipe.Method : null;
        var pieces = new LoadedPiece[load.Pieces.Count];
        try
        {
            for (int i = 0; i < pieces.Length; i++)
            {
                var piece = load.Pieces[i];
                var entry = manifest.Get(piece.Tensor);
                int size = entry.DType.ElementSize();
                int length = checked((int)(piece.Elements * size));
                long byteStart = piece.RowStart * piece.RowElements * size;
                long elementOffset = piece.RowStart * piece.RowElements;
                var mask = new BitMask(piece.Elements);
                string? weights = null;
                if (load.RestoredMasks is { } paths)
                {
                    mask = BitMask.FromBytes(File.ReadAllBytes(paths[i]), piece.Elements);
                    // A fine-tuned round persisted its weights beside its masks.
                    weights = Path.ChangeExtension(paths[i], ".weights");
                    if (!File.Exists(weights)) weights = null;
                }
                if (recipe.SyntheticWeightsSeed is { } synthetic)
                {
                    // Only the shapes come from the checkpoint: the weights are generated whenever they are scored.
                    pieces[i] = new LoadedPiece(piece, entry, null, null, mask, method, recipe.Seed, synthetic);
                    continue;
                }
                if (mapped && weights is null)
                {
                    var map = MappedRange.Map(manifest, entry, byteStart, length);
                    pieces[i] = new LoadedPiece(piece, entry, null, map, mask, method, recipe.Seed);
                    if (pieces[i].KeysFromBytes && load.RestoredMasks is null && piece.Elements >= load.CachedHistogramElements)
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
                pieces[i] = new LoadedPiece(piece, entry, raw, null, mask, method, recipe.Seed);
            }
            return (pieces, first);
        }
        catch
        {
            foreach (var piece in pieces) piece?.Dispose();
            throw;
        }
    }

    /// <summary>Bytes read at a time: a multiple of 64 elements of any dtype, small enough to stay in cache.</summary>
    private const int IoChunkBytes = 4 << 20;

    /// <summary>Per piece, Σ|w| (progressive allocation ranks layers by mean |w|); zeros for other scopes, which skip the pass.</summary>
    public double[] AbsSumPerPiece() =>
        Recipe.Scope == SelectionScope.Progressive ? Pieces.Select(AbsSum).ToArray() : new double[Pieces.Length];

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

    /// <summary>Throws <see cref="CheckpointChangedException"/> when a mapped checkpoint file changed since the load.</summary>
    public void CheckSources()
    {
        foreach (var piece in Pieces) piece.CheckSource();
    }

    public void Dispose()
    {
        ForgetStatistics();
        foreach (var piece in Pieces) piece.Dispose();
    }
}
