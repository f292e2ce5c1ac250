using System.Collections.Concurrent;
using Shears.Pruning.Checkpoints;

namespace Shears.Grains.Shards;

/// <summary>Headers of checkpoints this silo has read, so shard grains of one run parse them once.</summary>
public sealed class ManifestCache
{
    private readonly ConcurrentDictionary<(string Path, DateTime Stamp), CheckpointManifest> _cache = new();

    public CheckpointManifest Get(string path)
    {
        var stamp = Directory.Exists(path) ? Directory.GetLastWriteTimeUtc(path) : File.GetLastWriteTimeUtc(path);
        return _cache.GetOrAdd((Path.GetFullPath(path), stamp), key => Shears.Pruning.ModelFiles.ReadManifest(key.Path));
    }
}
