using Shears.Engine.Rounds;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Engine.Tests;

/// <summary>Two 2×4 fp32 tensors, each row a piece, rows dealt to two shards: answers checked by hand.</summary>
public class HandWorkedTests
{
    // Global positions 0–7 are a, 8–15 b.
    private static readonly float[] A = [0.5f, -0.1f, 0.1f, 2f, 0.1f, 3f, -0.5f, 0f];
    private static readonly float[] B = [0.1f, 0.2f, 0f, -0.1f, 4f, 0.1f, 1f, 0.2f];

    private static EngineHarness Run(TempDir dir, SelectionScope scope)
    {
        static byte[] Bytes(float[] v) => v.SelectMany(BitConverter.GetBytes).ToArray();
        ShardedCheckpointWriter.Write(dir.Path, [
            ("model.layers.0.mlp.a_proj.weight", TensorDType.F32, [2, 4], Bytes(A)),
            ("model.layers.0.mlp.b_proj.weight", TensorDType.F32, [2, 4], Bytes(B)),
        ], 1 << 20);
        return new EngineHarness(dir.Path, new RunRecipe { Scope = scope }, shardCount: 2, pieceRows: 1);
    }

    private static bool[] Mask(params int[] masked)
    {
        var mask = new bool[8];
        foreach (int i in masked) mask[i] = true;
        return mask;
    }

    [Fact]
    public async Task Global_rounds_mask_zeros_then_the_tied_tenths_by_position()
    {
        using var dir = new TempDir();
        using var run = Run(dir, SelectionScope.Global);
        Assert.Equal([1, 1], run.Layout.Shards.Select(s => s.Count(p => p.Tensor.Contains("a_proj"))));
        var round = RoundChooser.Choose(run.Recipe, run.Layout, run.Shards);

        // 0.4 × 16 = 6.4 → 6: the zeros a7, b2, then four of the six 0.1s in position order: a1, a2, a4, b0.
        var first = await run.RoundAsync(round, 1, 0.4);
        Assert.Equal(0.1f, Shears.Pruning.Scoring.ScoreKeys.ToScore(first.Threshold!.Value));
        Assert.Equal(Mask(1, 2, 4, 7), run.Masks()["model.layers.0.mlp.a_proj.weight"]);
        Assert.Equal(Mask(0, 2), run.Masks()["model.layers.0.mlp.b_proj.weight"]);
        Assert.Equal(6, run.Masked.Sum(m => m.Sum()));

        // 0.75 × 16 = 12: six more among the unmasked, the last 0.1s (b3, b5), the 0.2s (b1, b7), the 0.5s (a0, a6).
        await run.RoundAsync(round, 2, 0.75);
        Assert.Equal(Mask(0, 1, 2, 4, 6, 7), run.Masks()["model.layers.0.mlp.a_proj.weight"]);
        Assert.Equal(Mask(0, 1, 2, 3, 5, 7), run.Masks()["model.layers.0.mlp.b_proj.weight"]);
        Assert.Equal(12, run.Masked.Sum(m => m.Sum()));
    }

    [Fact]
    public async Task Half_an_element_rounds_to_even()
    {
        using var dir = new TempDir();
        using var run = Run(dir, SelectionScope.Global);
        // 0.40625 × 16 = 6.5 → 6, the same six as 0.4.
        await run.RoundAsync(RoundChooser.Choose(run.Recipe, run.Layout, run.Shards), 1, 0.40625);
        Assert.Equal(6, run.Masked.Sum(m => m.Sum()));
        Assert.Equal(Mask(1, 2, 4, 7), run.Masks()["model.layers.0.mlp.a_proj.weight"]);
    }

    [Fact]
    public async Task Layer_scope_masks_half_of_each_tensor()
    {
        using var dir = new TempDir();
        using var run = Run(dir, SelectionScope.Layer);
        var outcome = await run.RoundAsync(RoundChooser.Choose(run.Recipe, run.Layout, run.Shards), 1, 0.5);
        Assert.Null(outcome.Threshold);
        // a: the zero a7 and the 0.1s a1, a2, a4; b: the zero b2 and the 0.1s b0, b3, b5.
        Assert.Equal(Mask(1, 2, 4, 7), run.Masks()["model.layers.0.mlp.a_proj.weight"]);
        Assert.Equal(Mask(0, 2, 3, 5), run.Masks()["model.layers.0.mlp.b_proj.weight"]);
    }
}
