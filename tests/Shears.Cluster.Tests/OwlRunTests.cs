using System.Runtime.InteropServices;
using Shears.Contracts;
using Shears.Pruning.Allocation;
using Shears.Pruning.Calibration;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Pruning.Selection;
using Shears.Testing;
using TorchSharp;

namespace Shears.Cluster.Tests;

/// <summary>--scope owl across three silos, against OWL's allocation computed in process from the dense model's layers.</summary>
[Collection(ClusterCollection.Name)]
public class OwlRunTests(ClusterFixture fixture)
{
    private static readonly DemoCheckpointOptions Small = new(HiddenSize: 64, Layers: 3, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128, MaxShardBytes: 60_000, DType: TensorDType.F32);

    private const double Threshold = 2, Lambda = 0.1, Sparsity = 0.6;

    /// <summary>
    /// The reference: the calibration sequences through the dense layers one by one (each layer's inputs are the dense
    /// outputs of the layers before it), every projection's Wanda scores from its inputs, the layer's outlier ratio,
    /// then the allocation per layer and its share per tensor (in name order).
    /// </summary>
    private static Dictionary<string, long> ReferenceCounts(string checkpoint, string calibration)
    {
        using var model = LlamaModel.Load(checkpoint, torch.CPU);
        var manifest = CheckpointReader.ReadManifest(checkpoint);
        var sequences = EvalData.LoadTokenIds(calibration, 128);
        var hidden = sequences.Select(s => model.Embedding.Forward(torch.tensor(s, [1, s.Length]))).ToList();
        var ratios = new List<double>();
        var tensors = new List<string[]>();
        for (int l = 0; l < model.Layers.Count; l++)
        {
            var layer = model.Layers[l];
            var stats = new Dictionary<string, InputStatistics>(StringComparer.Ordinal);
            layer.Capture = (name, x) =>
            {
                if (!stats.TryGetValue(name, out var s)) stats[name] = s = new InputStatistics(x.shape[^1], withGram: false);
                using var rows = x[0];
                s.Add(rows);
            };
            var next = new List<torch.Tensor>();
            using (torch.no_grad())
                foreach (var h in hidden) next.Add(layer.Forward(h));
            layer.Capture = null;
            var names = stats.Keys.Order(StringComparer.Ordinal).ToArray();
            var scores = names.Select(name =>
            {
                var entry = manifest.Get(name);
                var values = MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(manifest, entry)).ToArray();
                using var weight = torch.tensor(values, entry.Shape.ToArray());
                return Wanda.ScoreValues(weight, stats[name], name);
            }).ToArray();
            ratios.Add(LayerOutliers.Count(scores, Threshold).Ratio);
            tensors.Add(names);
            foreach (var s in stats.Values) s.Dispose();
            foreach (var h in hidden) h.Dispose();
            hidden = next;
        }
        foreach (var h in hidden) h.Dispose();

        var elements = tensors.Select(names => names.Sum(n => manifest.Get(n).ElementCount)).ToArray();
        var perLayer = OwlAllocation.Allocate(elements, ratios, Sparsity, Lambda).Counts;
        Assert.True(perLayer.Distinct().Count() > 1, $"the layers' outlier ratios {string.Join(", ", ratios)} give a uniform allocation: the check cannot tell");
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        for (int l = 0; l < tensors.Count; l++)
        {
            var shares = OwlAllocation.Share(perLayer[l], tensors[l].Select(n => manifest.Get(n).ElementCount).ToArray());
            for (int i = 0; i < shares.Length; i++) counts[tensors[l][i]] = shares[i];
        }
        return counts;
    }

    /// <summary>The generated weights hold some exact zeros; made small but not zero, every zero of the output is a masked weight.</summary>
    private static void WithoutZeros(string checkpoint)
    {
        var manifest = CheckpointReader.ReadManifest(checkpoint);
        foreach (var t in manifest.Tensors.Where(t => t.Name.Contains("_proj.")))
        {
            string path = manifest.PathOf(t.FileName);
            var bytes = CheckpointReader.ReadTensor(manifest, t).ToArray();
            var values = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
            for (int i = 0; i < values.Length; i++) if (values[i] == 0) values[i] = 1e-3f;
            using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
            file.Seek(t.FileOffset, SeekOrigin.Begin);
            file.Write(bytes);
        }
    }

    [Theory]
    [InlineData("wanda")]
    [InlineData("sparsegpt")]
    [InlineData("magnitude")]
    public async Task PerLayerCountsMatchTheReferenceAllocationAndTheTotalIsExact(string method)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), Small);
        WithoutZeros(dir.Sub("in"));
        string calibration = PipelineTests.TokenFile(dir.Path, "calibration.json", 10, 16, 9);
        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = dir.Sub("in"), OutputPath = dir.Sub("out"), Sparsity = Sparsity, Scope = RunOptions.Scopes.Owl, Method = method,
            Calibration = calibration, OwlThreshold = Threshold, OwlLambda = Lambda,
        });
        Assert.True(status.State == RunState.Completed, status.Error);

        var expected = ReferenceCounts(dir.Sub("in"), calibration);
        var input = CheckpointReader.ReadManifest(dir.Sub("in"));
        var output = CheckpointReader.ReadManifest(dir.Sub("out"));
        long total = 0, elements = 0;
        foreach (var (name, count) in expected)
        {
            var before = MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(input, input.Get(name))).ToArray();
            var after = MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(output, output.Get(name))).ToArray();
            Assert.DoesNotContain(0f, before);
            Assert.Equal(count, after.LongCount(v => v == 0));
            if (method != "sparsegpt") Assert.All(Enumerable.Range(0, after.Length), i => Assert.True(after[i] == 0 || after[i] == before[i]));
            total += count;
            elements += after.Length;
        }
        Assert.Equal(Counts.Target(Sparsity, elements), total);
        Assert.Equal(total, status.Rounds[^1].MaskedWeights);
    }
}
