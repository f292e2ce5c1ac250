using Shears.Contracts;
using Shears.Grains.Runs;
using Shears.Pruning;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>--shards N: the planner's exact cut of the prunable tensors into N shards (no cluster needed).</summary>
public class ExactShardsTests
{
    private static RunPlan Plan(string dir, RunSpec spec) => RunPlanner.Plan(ModelFiles.ReadManifest(dir), spec);

    private static void WriteTwoTensors(string dir) =>
        ShardedCheckpointWriter.Write(dir,
        [
            ("model.layers.0.mlp.up_proj.weight", TensorDType.F32, [3, 4], new byte[12 * 4]),
            ("model.layers.1.mlp.up_proj.weight", TensorDType.F32, [5, 2], new byte[10 * 4]),
        ], 1 << 20, new Dictionary<string, string> { ["format"] = "pt" });

    [Fact]
    public void FourShardsOfTwoTensorsCutWhereWorkedByHand()
    {
        // 22 weights: A = 3 rows of 4 (0..12), B = 5 rows of 2 (12..22). Ideal cuts 5.5 → 6 (half to even), 11, 16.5 → 16.
        // Nearest row boundaries: 6 lies between A's 4 and 8 (a tie, taken low: 4); 11 between 8 and 12 (12); 16 is B's row 2.
        using var dir = new TempDir();
        WriteTwoTensors(dir.Sub("in"));
        var plan = Plan(dir.Sub("in"), new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Shards = 4 });
        string a = "model.layers.0.mlp.up_proj.weight", b = "model.layers.1.mlp.up_proj.weight";
        var expected = new[]
        {
            new[] { (a, 0L, 1L) },
            new[] { (a, 1L, 2L) },
            new[] { (b, 0L, 2L) },
            new[] { (b, 2L, 3L) },
        };
        Assert.Equal(4, plan.Shards.Count);
        for (int s = 0; s < 4; s++)
            Assert.Equal(expected[s], plan.Shards[s].Pieces.Select(p => (p.Tensor, p.RowStart, p.RowCount)).ToArray());
        Assert.All(plan.Shards.SelectMany(s => s.Pieces), p => Assert.Equal(0, p.Group));
        Assert.Equal([22L], plan.GroupElements);

        // Layer scope: one group per tensor, pieces keep their tensor's group.
        var layer = Plan(dir.Sub("in"), new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Scope = "layer", Shards = 4 });
        Assert.Equal([12L, 10L], layer.GroupElements);
        Assert.Equal([0, 0, 1, 1], layer.Shards.Select(s => s.Pieces.Single().Group).ToArray());
    }

    [Fact]
    public void MoreShardsThanRowsAreRefusedNamingTheOption()
    {
        using var dir = new TempDir();
        WriteTwoTensors(dir.Sub("in"));
        var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5 };
        Assert.Equal(8, Plan(dir.Sub("in"), spec with { Shards = 8 }).Shards.Count); // one row each
        var e = Assert.Throws<RunRejectedException>(() => Plan(dir.Sub("in"), spec with { Shards = 9 }));
        Assert.Contains("--shards 9", e.Message);
        Assert.Contains("row boundaries", e.Message);
    }

    [Fact]
    public void RandomCountsCoverEveryRowOnceWithCutsNearTheIdeal()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var manifest = ModelFiles.ReadManifest(dir.Sub("in"));
        var random = new Random(11);
        foreach (string? quantize in new[] { null, "W8A16" })
            for (int trial = 0; trial < 12; trial++)
            {
                int count = trial == 0 ? 1 : random.Next(2, 60);
                var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Shards = count, Quantize = quantize };
                var plan = RunPlanner.Plan(manifest, spec);
                var greedy = RunPlanner.Plan(manifest, spec with { Shards = null });
                Assert.Equal(count, plan.Shards.Count);
                Assert.Equal(greedy.Prunable, plan.Prunable);

                // The pieces, in order, are the greedy plan's tensors' rows exactly once each.
                var rows = plan.Shards.SelectMany(s => s.Pieces).GroupBy(p => p.Tensor).ToDictionary(g => g.Key, g => g.ToList());
                long total = 0;
                foreach (var t in greedy.Shards.SelectMany(s => s.Pieces).GroupBy(p => p.Tensor))
                {
                    long tensorRows = t.Sum(p => p.RowCount);
                    long next = 0;
                    foreach (var p in rows[t.Key])
                    {
                        Assert.Equal(next, p.RowStart);
                        Assert.True(p.RowCount > 0);
                        if (quantize is not null && p.RowStart + p.RowCount < tensorRows) Assert.Equal(0, (p.RowStart + p.RowCount) % 8);
                        next += p.RowCount;
                    }
                    Assert.Equal(tensorRows, next);
                    total += t.Sum(p => p.Elements);
                }
                Assert.Equal(rows.Keys.Count, greedy.Shards.SelectMany(s => s.Pieces).Select(p => p.Tensor).Distinct().Count());

                // Every cut lies within one step (a row, or 8 rows quantized) of i/N of the weights.
                long step = plan.Shards.SelectMany(s => s.Pieces).Max(p => p.RowElements) * (quantize is null ? 1 : 8);
                long cut = 0;
                for (int k = 0; k < count - 1; k++)
                {
                    cut += plan.Shards[k].Pieces.Sum(p => p.Elements);
                    double ideal = (double)total * (k + 1) / count;
                    Assert.True(Math.Abs(cut - ideal) <= step, $"{count} shards, cut {k + 1} at {cut}, ideal {ideal}");
                }
            }
    }

    [Fact]
    public void TheOptionIsRefusedWhereShardsAreNotRowBlocks()
    {
        var spec = new RunSpec { ModelPath = "/m", OutputPath = "/o", Sparsity = 0.5, Shards = 16 };
        Assert.Empty(RunOptions.Validate(spec));
        Assert.Contains(RunOptions.Validate(spec with { Shards = 0 }), e => e.Contains("--shards must lie in [1, 65536], got 0"));
        Assert.Contains(RunOptions.Validate(spec with { ShardElements = 1000 }), e => e.Contains("--shards or --shard-elements, not both"));
        Assert.Contains(RunOptions.Validate(spec with { Pattern = "rows" }), e => e.Contains("--pattern rows keeps whole"));
        Assert.Contains(RunOptions.Validate(spec with { EvalData = "/e.json" }), e => e.Contains("one shard per model stage"));
    }
}
