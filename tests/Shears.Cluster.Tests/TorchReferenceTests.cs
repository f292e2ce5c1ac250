using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// Shears on three silos against masks that torch.nn.utils.prune (PyTorch 2.11) gave for the same checkpoints:
/// <c>global_unstructured</c> with L1, <c>l1_unstructured</c> per tensor, <c>ln_structured</c> over rows and
/// columns. Written by bench/reference/torch_reference.py; the checkpoints hold fp32 weights with distinct
/// magnitudes, bf16 weights with many ties, and fp32 zeros of both signs, subnormals and infinities.
/// </summary>
[Collection(ClusterCollection.Name)]
public class TorchReferenceTests(ClusterFixture fixture)
{
    private static string Root => Path.Combine(AppContext.BaseDirectory, "TorchReference");

    public static TheoryData<string, string> Cases => new()
    {
        { "f32-normal", "global-0.37" }, { "f32-normal", "global-0.8" }, { "f32-normal", "layer-0.37" },
        { "f32-normal", "rows-1-0.37" }, { "f32-normal", "rows-2-0.5" }, { "f32-normal", "rows-inf-0.25" },
        { "f32-normal", "columns-1-0.37" }, { "f32-normal", "columns-2-0.6" },
        { "bf16-normal", "global-0.5" }, { "bf16-normal", "layer-0.5" },
        { "f32-extreme", "global-0.5" }, { "f32-extreme", "layer-0.3" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task SameMasksAsTorchPrune(string checkpoint, string @case)
    {
        string input = Path.Combine(Root, checkpoint, "model");
        var manifest = CheckpointReader.ReadManifest(input);
        var prunable = manifest.Tensors.Where(ReferencePruner.DefaultPrunable).ToList();
        var torch = TorchMasks(Path.Combine(Root, checkpoint, "torch-masks.safetensors"), @case);
        Assert.Equal(prunable.Select(t => t.Name), torch.Keys.Order(StringComparer.Ordinal));

        var parts = @case.Split('-');
        double sparsity = double.Parse(parts[^1], System.Globalization.CultureInfo.InvariantCulture);
        using var dir = new TempDir();
        var spec = new RunSpec
        {
            ModelPath = input, OutputPath = dir.Sub("out"), Sparsity = sparsity,
            Scope = parts[0] == "global" ? RunOptions.Scopes.Global : RunOptions.Scopes.Layer,
            Pattern = parts[0] is "rows" or "columns" ? parts[0] : RunOptions.Patterns.Unstructured,
            Norm = parts[0] is "rows" or "columns" ? (parts[1] == "inf" ? double.PositiveInfinity : int.Parse(parts[1])) : 1,
            ShardElements = 600, // row blocks of one tensor on several silos
        };
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, spec);
        Assert.True(status.State == RunState.Completed, status.Error);

        // torch's topk chooses among equal scores as it pleases; Shears masks the lowest global positions first.
        // Off the threshold the two must agree exactly, and at it mask as many.
        var expected = parts[0] is "global" or "layer" ? TiesByPosition(manifest, prunable, torch, global: parts[0] == "global") : torch;
        ReferencePruner.AssertOutput(input, dir.Sub("out"), expected);
    }

    private static Dictionary<string, bool[]> TorchMasks(string file, string @case)
    {
        var manifest = CheckpointReader.ReadManifest(file);
        var masks = new Dictionary<string, bool[]>(StringComparer.Ordinal);
        foreach (var t in manifest.Tensors.Where(t => t.Name.StartsWith(@case + "/", StringComparison.Ordinal)))
        {
            Assert.Equal(TensorDType.U8, t.DType);
            masks[t.Name[(@case.Length + 1)..]] = CheckpointReader.ReadTensor(manifest, t).Select(b => b switch
            {
                0 => false,
                1 => true,
                _ => throw new InvalidDataException($"{file}: {t.Name} holds {b}"),
            }).ToArray();
        }
        Assert.NotEmpty(masks);
        return masks;
    }

    /// <summary>torch's masks with the masked share of the threshold's ties moved to the lowest positions of each group.</summary>
    private static Dictionary<string, bool[]> TiesByPosition(CheckpointManifest manifest, List<TensorEntry> prunable, Dictionary<string, bool[]> torch, bool global)
    {
        var result = torch.ToDictionary(kv => kv.Key, kv => (bool[])kv.Value.Clone(), StringComparer.Ordinal);
        var groups = global ? [prunable] : prunable.Select(t => new List<TensorEntry> { t }).ToList();
        foreach (var group in groups)
        {
            var scores = group.Select(t =>
            {
                var raw = CheckpointReader.ReadTensor(manifest, t);
                return Enumerable.Range(0, (int)t.ElementCount).Select(i => ReferencePruner.Magnitude(raw, t.DType, i)).ToArray();
            }).ToArray();
            var elements = group.SelectMany((t, g) => Enumerable.Range(0, scores[g].Length).Select(i => (Tensor: t.Name, Index: i, Score: scores[g][i]))).ToList();
            var masked = elements.Where(e => torch[e.Tensor][e.Index]).ToList();
            if (masked.Count == 0) continue;
            float threshold = masked.Max(e => e.Score);
            Assert.All(elements.Where(e => !torch[e.Tensor][e.Index]), e => Assert.True(e.Score >= threshold, $"{e.Tensor}[{e.Index}]"));
            int tiesMasked = masked.Count(e => e.Score == threshold);
            var ties = elements.Where(e => e.Score == threshold).ToList(); // in global position order
            foreach (var (tensor, index, _) in ties) result[tensor][index] = false;
            foreach (var (tensor, index, _) in ties.Take(tiesMasked)) result[tensor][index] = true;
        }
        return result;
    }
}
