using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Tests.Checkpoints;

public class MappedRangeTests
{
    [Fact]
    public void MapsExactlyTheBytesOfATensorRange()
    {
        using var dir = new TempDir();
        var a = Enumerable.Range(0, 3000).Select(i => (byte)(i * 7)).ToArray();
        var b = Enumerable.Range(0, 5000).Select(i => (byte)(i * 13 + 1)).ToArray();
        ShardedCheckpointWriter.Write(dir.Path, [("a", TensorDType.U8, [3000], a), ("b", TensorDType.U8, [5000], b)], long.MaxValue, null);
        var manifest = CheckpointReader.ReadManifest(dir.Path);

        // An offset that is not a page multiple, anywhere in the file.
        using (var map = MappedRange.Map(manifest, manifest.Get("b"), 1234, 2000))
        {
            Assert.Equal(2000, map.Length);
            Assert.Equal(b.AsSpan(1234, 2000).ToArray(), map.Span.ToArray());
            Assert.Equal(CheckpointReader.ReadTensor(manifest, manifest.Get("a")), MappedRange.Map(manifest, manifest.Get("a"), 0, 3000).Span.ToArray());
        }

        var disposed = MappedRange.Map(manifest, manifest.Get("a"), 10, 10);
        disposed.Dispose();
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => disposed.Span.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => MappedRange.Map(manifest, manifest.Get("a"), 2990, 11));
    }
}
