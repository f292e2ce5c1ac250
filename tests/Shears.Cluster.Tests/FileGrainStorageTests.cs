using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using Orleans.Storage;
using Shears.Contracts;
using Shears.Grains;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>The runs' state in files, as two silo processes (two storages on one folder) see it.</summary>
public class FileGrainStorageTests
{
    private static Serializer NewSerializer() =>
        new ServiceCollection().AddSerializer(b => b.AddAssembly(typeof(RunStatus).Assembly)).BuildServiceProvider().GetRequiredService<Serializer>();

    [Fact]
    public async Task WritesAreSeenByOtherSilosAndStaleWritesAreRefused()
    {
        using var dir = new TempDir();
        var a = new FileGrainStorage(dir.Path, NewSerializer());
        var b = new FileGrainStorage(dir.Path, NewSerializer());
        var id = GrainId.Create("run", "r/1"); // a key with a character that cannot stand in a file name as it is

        var empty = new GrainState<RunStatus>();
        await a.ReadStateAsync("run", id, empty);
        Assert.False(empty.RecordExists);
        Assert.Null(empty.ETag);

        var written = new GrainState<RunStatus> { State = new RunStatus { RunId = "r/1", Phase = "round 3/8", State = RunState.Running } };
        await a.WriteStateAsync("run", id, written);
        var read = new GrainState<RunStatus>();
        await b.ReadStateAsync("run", id, read);
        Assert.True(read.RecordExists);
        Assert.Equal("round 3/8", read.State!.Phase);
        Assert.Equal(written.ETag, read.ETag);

        // b writes on top of what it read; a, still holding the older version, is refused.
        read.State = read.State! with { Phase = "round 4/8" };
        await b.WriteStateAsync("run", id, read);
        written.State = written.State! with { Phase = "round 9/8" };
        await Assert.ThrowsAsync<InconsistentStateException>(() => a.WriteStateAsync("run", id, written));
        var again = new GrainState<RunStatus>();
        await a.ReadStateAsync("run", id, again);
        Assert.Equal("round 4/8", again.State!.Phase);

        await a.ClearStateAsync("run", id, again);
        var cleared = new GrainState<RunStatus>();
        await b.ReadStateAsync("run", id, cleared);
        Assert.False(cleared.RecordExists);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public async Task AFileThatIsNotStateIsNamed()
    {
        using var dir = new TempDir();
        var storage = new FileGrainStorage(dir.Path, NewSerializer());
        var id = GrainId.Create("run", "x");
        await storage.WriteStateAsync("run", id, new GrainState<RunStatus> { State = new RunStatus { RunId = "x" } });
        string file = Assert.Single(Directory.GetFiles(dir.Path, "*.state"));
        File.WriteAllBytes(file, [1, 2, 3]);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => storage.ReadStateAsync("run", id, new GrainState<RunStatus>()));
        Assert.Contains(file, e.Message);
    }
}
