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

    [Fact]
    public void AFileChangedInPlaceIsNamed()
    {
        using var dir = new TempDir();
        ShardedCheckpointWriter.Write(dir.Path, [("a", TensorDType.U8, [3000], new byte[3000])], long.MaxValue, null);
        var manifest = CheckpointReader.ReadManifest(dir.Path);
        string file = manifest.PathOf(manifest.Get("a").FileName);
        var mapped = File.GetLastWriteTimeUtc(file);

        using (var map = MappedRange.Map(manifest, manifest.Get("a"), 0, 3000))
        {
            map.CheckUnchanged();
            // The same bytes written again: only the modification time tells.
            using (var handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
                RandomAccess.Write(handle, new byte[8], manifest.Get("a").FileOffset);
            File.SetLastWriteTimeUtc(file, mapped.AddSeconds(1));
            var modified = Assert.Throws<CheckpointChangedException>(map.CheckUnchanged);
            Assert.Contains(file, modified.Message);
            Assert.Contains("'a'", modified.Message);
            Assert.Contains("modified", modified.Message);
        }

        using (var map = MappedRange.Map(manifest, manifest.Get("a"), 0, 1000))
        {
            using (var handle = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
                RandomAccess.SetLength(handle, RandomAccess.GetLength(handle) - 100);
            var cut = Assert.Throws<CheckpointChangedException>(map.CheckUnchanged);
            Assert.Contains("length went from", cut.Message);
        }

        // Replaced under the same name (written beside it, then renamed): the map still shows the file it mapped.
        using (var map = MappedRange.Map(manifest, manifest.Get("a"), 0, 1000))
        {
            File.WriteAllBytes(file + ".new", File.ReadAllBytes(file));
            File.Move(file + ".new", file, overwrite: true);
            map.CheckUnchanged();
        }
    }
}

/// <summary>Reads the process's own resident memory: alone, so that no other test maps files meanwhile.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ResidentMemoryCollection { public const string Name = "resident memory"; }

[Collection(ResidentMemoryCollection.Name)]
public class ResidentMemoryTests
{
    [Fact]
    public void ReleasedPagesLeaveResidentMemoryAndReadTheSameBytesAgain()
    {
        using var dir = new TempDir();
        var a = Enumerable.Range(0, 64 << 20).Select(i => (byte)(i * 31 + (i >> 12))).ToArray();
        ShardedCheckpointWriter.Write(dir.Path, [("a", TensorDType.U8, [a.Length], a)], long.MaxValue, null);
        var manifest = CheckpointReader.ReadManifest(dir.Path);
        using var map = MappedRange.Map(manifest, manifest.Get("a"), 100, a.Length - 100);
        long sum = 0;
        foreach (byte x in map.Span) sum += x;
        long touched = ResidentFileKiB();
        map.ReleaseResident();
        long released = ResidentFileKiB();
        Assert.True(touched - released > 48 * 1024, $"file-backed residency {touched} KiB before, {released} KiB after");
        Assert.Equal(a.AsSpan(100).ToArray(), map.Span.ToArray());
        Assert.Equal(a.Skip(100).Sum(x => (long)x), sum);
    }

    private static long ResidentFileKiB() =>
        long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("RssFile:")).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
}
