using System.Text.Json;
using Shears.Pruning.Checkpoints;
using static Shears.Pruning.Tests.Checkpoints.RawSafetensors;

namespace Shears.Pruning.Tests.Checkpoints;

public class ShardedCheckpointWriterTests
{
    private static (string Name, TensorDType DType, long[] Shape, byte[] Data) Tensor(string name, int bytes, int seed) =>
        (name, TensorDType.U8, [bytes], RandomBytes(bytes, seed));

    [Fact]
    public void SplitsIntoShardsWithAnIndex()
    {
        using var dir = new TempDir();
        var tensors = new[] { Tensor("z.first", 40, 1), Tensor("a.second", 40, 2), Tensor("m.third", 40, 3), Tensor("big", 250, 4), Tensor("last", 10, 5) };
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };

        ShardedCheckpointWriter.Write(dir.Path, tensors, maxShardBytes: 100, metadata);

        string[] expectedFiles =
        [
            "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
            "model-00004-of-00004.safetensors", "model.safetensors.index.json",
        ];
        Assert.Equal(expectedFiles, Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        using var index = JsonDocument.Parse(File.ReadAllBytes(dir.File("model.safetensors.index.json")));
        Assert.Equal(380, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
        Assert.Equal(["a.second", "big", "last", "m.third", "z.first"], map.Keys); // sorted, as transformers writes it
        Assert.Equal("model-00001-of-00004.safetensors", map["z.first"]);
        Assert.Equal("model-00001-of-00004.safetensors", map["a.second"]);
        Assert.Equal("model-00002-of-00004.safetensors", map["m.third"]);  // 120 bytes would pass the limit
        Assert.Equal("model-00003-of-00004.safetensors", map["big"]);      // larger than a shard: alone
        Assert.Equal("model-00004-of-00004.safetensors", map["last"]);

        var m = CheckpointReader.ReadManifest(dir.Path);
        Assert.Equal("model.safetensors.index.json", m.IndexFileName);
        Assert.All(m.Files, f => Assert.Equal(metadata, f.Metadata));
        foreach (var (name, _, _, data) in tensors)
        {
            Assert.Equal(data, CheckpointReader.ReadTensor(m, m.Get(name)));
        }
    }

    [Fact]
    public void EverythingThatFitsGoesInOneFileAndStaleShardsGo()
    {
        using var dir = new TempDir();
        ShardedCheckpointWriter.Write(dir.Path, [Tensor("a", 60, 1), Tensor("b", 60, 2)], maxShardBytes: 100);
        Assert.True(File.Exists(dir.File("model.safetensors.index.json")));
        File.WriteAllText(dir.File("config.json"), "{}");

        ShardedCheckpointWriter.Write(dir.Path, [Tensor("a", 60, 1), Tensor("b", 60, 2)], maxShardBytes: 120);

        Assert.Equal(["config.json", "model.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var m = CheckpointReader.ReadManifest(dir.Path);
        Assert.Null(m.IndexFileName);
        Assert.Null(m.Files[0].Metadata);
        Assert.Equal(["config.json"], m.CompanionFiles);
    }

    [Fact]
    public void DataOfTheWrongLengthIsRefusedNamingTheTensor()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ArgumentException>(() =>
            ShardedCheckpointWriter.Write(dir.Path, [("w", TensorDType.F32, [2, 2], new byte[15])], 100));
        Assert.Contains("'w'", e.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
