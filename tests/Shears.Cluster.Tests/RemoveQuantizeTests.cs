using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>--remove with --quantize over three silos: one run writes what removing and then quantizing in two runs writes.</summary>
[Collection(ClusterCollection.Name)]
public class RemoveQuantizeTests(ClusterFixture fixture)
{
    private static readonly DemoCheckpointOptions Small = QuantizeTests.Small;

    /// <summary>Every file of the output but the report, by name.</summary>
    private static SortedDictionary<string, byte[]> Files(string folder) =>
        new(Directory.EnumerateFiles(folder).Where(f => Path.GetFileName(f) != "shears-report.json")
            .ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes), StringComparer.Ordinal);

    [Theory]
    [InlineData("neurons", 0.25, "W4A16", 16)]
    [InlineData("neurons", 0.25, "W4A16_ASYM", 32)]
    [InlineData("neurons", 0.25, "W8A16", 128)]
    [InlineData("heads", 0.5, "W4A16", 16)]
    [InlineData("heads", 0.5, "W4A16_ASYM", 32)]
    [InlineData("heads", 0.5, "W8A16", 128)]
    [InlineData("layers", 0.25, "W4A16", 16)]
    [InlineData("layers", 0.25, "W4A16_ASYM", 32)]
    public async Task OneRunWritesWhatRemovingThenQuantizingWrites(string pattern, double sparsity, string scheme, int groupSize)
    {
        using var dir = new TempDir();
        bool layers = pattern == "layers";
        DemoCheckpoint.Write(dir.Sub("in"), layers ? Small with { Layers = 4 } : Small);
        string eval = QuantizeTests.TokenFile(dir.Path, 6, 20, 5);
        var removed = new RunSpec { ModelPath = dir.Sub("in"), OutputPath = dir.Sub("removed"), Sparsity = sparsity, Pattern = pattern, Remove = true };
        removed = layers ? removed with { Calibration = QuantizeTests.TokenFile(dir.Path, 8, 24, 7) } : removed with { Scope = "layer" };
        var first = await Runs.RunToEndAsync(fixture.Cluster.Client, removed);
        Assert.True(first.State == RunState.Completed, first.Error);
        var second = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("removed"), OutputPath = dir.Sub("two"), Sparsity = 0, Quantize = scheme, GroupSize = groupSize, EvalData = eval,
        });
        Assert.True(second.State == RunState.Completed, second.Error);
        var one = await Runs.RunToEndAsync(fixture.Cluster.Client, removed with { OutputPath = dir.Sub("one"), Quantize = scheme, GroupSize = groupSize, EvalData = eval });
        Assert.True(one.State == RunState.Completed, one.Error);

        var expected = Files(dir.Sub("two"));
        var actual = Files(dir.Sub("one"));
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (name, bytes) in expected) Assert.True(bytes.AsSpan().SequenceEqual(actual[name]), $"{name} differs");
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(dir.Sub("one")), e => Path.GetFileName(e).StartsWith('.'));
        // The cut changes the groups: the smaller model's widths are not the input's.
        Assert.Contains("quantization_config", File.ReadAllText(Path.Combine(dir.Sub("one"), "config.json")));

        // The last evaluation measured what the written model computes.
        double reported = one.Rounds[^1].Eval!.Value, twoRuns = second.Rounds[^1].Eval!.Value;
        Assert.True(Math.Abs(reported - twoRuns) / twoRuns < 1e-5, $"one run {reported}, two runs {twoRuns}");
    }

    [Fact]
    public async Task RemoveWithGptqIsRefusedNamingBothOptions()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        var grain = fixture.Cluster.Client.GetGrain<IRunGrain>(Guid.NewGuid().ToString("N"));
        var spec = new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = 0.25, Pattern = "neurons", Scope = "layer", Remove = true,
            Quantize = "W4A16", QuantMethod = "gptq", Calibration = QuantizeTests.TokenFile(dir.Path, 2, 8, 3),
        };
        var e = await Assert.ThrowsAsync<RunRejectedException>(() => grain.StartAsync(spec));
        Assert.Contains("--remove", e.Message);
        Assert.Contains("--quant-method gptq", e.Message);
        Assert.False(Directory.Exists(dir.Sub("out")));
    }
}
