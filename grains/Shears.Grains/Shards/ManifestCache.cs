using System.Collections.Concurrent;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Encoders;

namespace Shears.Grains.Shards;

/// <summary>Headers of checkpoints this silo has read (and an ONNX encoder's layout), so shard grains of one run parse them once.</summary>
public sealed class ManifestCache
{
    private readonly ConcurrentDictionary<(string Path, DateTime Stamp), CheckpointManifest> _cache = new();
    private readonly ConcurrentDictionary<(string Path, DateTime Stamp), (BertConfig, BertWeightNames)> _encoders = new();

    public CheckpointManifest Get(string path) => _cache.GetOrAdd(Key(path), key => Shears.Pruning.ModelFiles.ReadManifest(key.Path));

    /// <summary>The config and weight names of the BERT-family encoder in the ONNX file at <paramref name="onnxPath"/>.</summary>
    public (BertConfig Config, BertWeightNames Names) Encoder(string onnxPath) => _encoders.GetOrAdd(Key(onnxPath), key =>
    {
        var model = Shears.Pruning.Onnx.OnnxModel.Read(key.Path);
        var names = BertWeightNames.FromOnnx(model);
        return (BertConfig.FromOnnx(model, names), names);
    });

    private static (string, DateTime) Key(string path) =>
        (Path.GetFullPath(path), Directory.Exists(path) ? Directory.GetLastWriteTimeUtc(path) : File.GetLastWriteTimeUtc(path));
}
