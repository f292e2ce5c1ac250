using Shears.Contracts;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>Combinations the shards could only fail on mid-run, refused before the run instead, naming the option.</summary>
public class PlanRefusalTests
{
    [Fact]
    public void An_nm_pattern_whose_m_does_not_divide_a_matrix_input_width_is_refused_naming_the_tensor()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 64, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 100, VocabSize: 128));
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        var spec = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Pattern = "4:8" };
        Assert.Empty(RunOptions.Validate(spec));
        // down_proj reads the 100 intermediate features: 8 does not divide them, 4 does.
        var e = Assert.Throws<RunRejectedException>(() => RunPlanner.Plan(manifest, spec));
        Assert.Contains("--pattern 4:8: tensor 'model.layers.0.mlp.down_proj.weight' of shape [64, 100] has 100 input features, not a multiple of 8", e.Message);
        Assert.Throws<RunRejectedException>(() => RunPlanner.Plan(manifest, spec with { Method = RunOptions.Methods.Wanda, Calibration = "calibration.json" }));
        Assert.NotNull(RunPlanner.Plan(manifest, spec with { Pattern = "2:4" }));
        Assert.NotNull(RunPlanner.Plan(manifest, spec with { Exclude = ["*.down_proj.weight"] }));
    }

    [Fact]
    public void Act_order_in_sparsegpt_joint_sweep_and_a_group_size_for_per_channel_schemes_are_refused()
    {
        var joint = new RunSpec
        {
            ModelPath = "m", OutputPath = "o", Sparsity = 0.5, Scope = RunOptions.Scopes.Layer, Method = RunOptions.Methods.SparseGpt, Calibration = "c.json",
            Quantize = RunOptions.QuantSchemes.W4A16, QuantMethod = RunOptions.QuantMethods.Gptq,
        };
        Assert.True(joint.JointQuantization);
        Assert.Empty(RunOptions.Validate(joint));
        Assert.Contains(RunOptions.Validate(joint with { ActOrder = true }), m => m.StartsWith("--act-order: with --method sparsegpt and no fine-tuning", StringComparison.Ordinal));
        // Fine-tuned, the masks are fixed before GPTQ, which orders its columns.
        Assert.Empty(RunOptions.Validate(joint with { ActOrder = true, FinetuneSteps = 2, FinetuneData = "t.json" }));
        Assert.Empty(RunOptions.Validate(joint with { ActOrder = true, Method = RunOptions.Methods.Wanda }));

        var rtn = new RunSpec { ModelPath = "m", OutputPath = "o", Sparsity = 0.5, Quantize = RunOptions.QuantSchemes.W8A16 };
        Assert.Empty(RunOptions.Validate(rtn));
        Assert.Contains(RunOptions.Validate(rtn with { GroupSize = 64 }), m => m.Contains("--group-size: W8A16 has one scale per output channel", StringComparison.Ordinal));
        Assert.Contains(RunOptions.Validate(rtn with { Quantize = RunOptions.QuantSchemes.W8A8, GroupSize = 32 }), m => m.Contains("--group-size: W8A8", StringComparison.Ordinal));
        Assert.Empty(RunOptions.Validate(rtn with { Quantize = RunOptions.QuantSchemes.W4A16, GroupSize = 64 }));
    }
}
