using Shears.Engine;
using Shears.Engine.Rounds;
using Shears.Engine.Shards;
using Shears.Pruning;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Engine.Tests;

/// <summary>
/// A run held in this process: the checkpoint's prunable tensors cut into row blocks of at most
/// <c>pieceRows</c> rows, dealt to <c>shardCount</c> shards in turn (so a tensor's blocks lie on several shards),
/// and the engine's rounds driven over them as a coordinator would.
/// </summary>
internal sealed class EngineHarness : IDisposable
{
    public CheckpointManifest Manifest { get; }
    public RunLayout Layout { get; }
    public InProcessShardSet Shards { get; }
    public long[][] Masked { get; }
    public RunRecipe Recipe { get; }

    public EngineHarness(string checkpoint, RunRecipe recipe, int shardCount, long pieceRows, Func<TensorEntry, bool>? prunable = null, bool layerPerShard = false)
    {
        Recipe = recipe;
        Manifest = ModelFiles.ReadManifest(checkpoint);
        var tensors = Manifest.Tensors.Where(prunable ?? ReferencePruner.DefaultPrunable).OrderBy(t => t.Name, StringComparer.Ordinal).ToArray();
        bool global = recipe.Scope == SelectionScope.Global;
        var shards = Enumerable.Range(0, shardCount).Select(_ => new List<ShardPiece>()).ToArray();
        int next = 0;
        for (int t = 0; t < tensors.Length; t++)
        {
            long rows = tensors[t].Shape[0], rowElements = tensors[t].ElementCount / rows;
            if (layerPerShard)
            {
                // Units that rank whole tensors or layers (rows, columns, heads) keep a layer on one shard.
                int layer = int.Parse(tensors[t].Name.Split('.')[2]);
                shards[layer % shardCount].Add(new ShardPiece(tensors[t].Name, 0, rows, rowElements, global ? 0 : t));
                continue;
            }
            for (long start = 0; start < rows; start += pieceRows)
            {
                shards[next].Add(new ShardPiece(tensors[t].Name, start, Math.Min(pieceRows, rows - start), rowElements, global ? 0 : t));
                next = (next + 1) % shardCount;
            }
        }
        Layout = new RunLayout(
            tensors.Select(t => t.Name).ToArray(), shards.Select(s => (IReadOnlyList<ShardPiece>)s.ToArray()).ToArray(),
            global ? [tensors.Sum(t => t.ElementCount)] : tensors.Select(t => t.ElementCount).ToArray(), []);
        var heads = new HeadGeometry(TieHeavyCheckpoint.Heads, TieHeavyCheckpoint.KvHeads, TieHeavyCheckpoint.Hidden / TieHeavyCheckpoint.Heads, TieHeavyCheckpoint.Hidden);
        // A small cache threshold, so that kept histograms answer counts as they do on large tensors.
        Shards = new InProcessShardSet(shards.Select(s => ShardSelection.Load(new ShardLoad
        {
            Manifest = Manifest, Pieces = s, Recipe = recipe, Heads = heads, CachedHistogramElements = 512,
        })).ToArray());
        Masked = Shards.Shards.Select(s => s.MaskedPerPiece).ToArray();
    }

    public Task<RoundOutcome> RoundAsync(IRound round, int number, double target, long[]? groupTargets = null) =>
        round.RunAsync(new RoundContext(number, target, Masked, groupTargets), CancellationToken.None);

    /// <summary>Per prunable tensor, its mask put together from the pieces on every shard.</summary>
    public Dictionary<string, bool[]> Masks()
    {
        var masks = Layout.Prunable.ToDictionary(n => n, n => new bool[Manifest.Get(n).ElementCount], StringComparer.Ordinal);
        foreach (var shard in Shards.Shards)
            foreach (var piece in shard.Pieces)
                for (long e = 0; e < piece.Piece.Elements; e++)
                    masks[piece.Piece.Tensor][piece.ElementOffset + e] = piece.Mask[e];
        return masks;
    }

    public static void AssertSame(Dictionary<string, bool[]> expected, Dictionary<string, bool[]> actual, string because)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, mask) in expected)
        {
            int first = Enumerable.Range(0, mask.Length).FirstOrDefault(i => mask[i] != actual[name][i], -1);
            Assert.True(first < 0, $"{because}: {name} differs first at element {first}");
        }
    }

    public void Dispose()
    {
        foreach (var shard in Shards.Shards) shard.Dispose();
    }
}
