using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using Shears.Grains;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>The reminder table in files, as two silo processes (two tables on one folder) see it.</summary>
public class FileReminderTableTests
{
    private static Serializer NewSerializer() =>
        new ServiceCollection().AddSerializer(b => b.AddAssembly(typeof(ReminderEntry).Assembly)).BuildServiceProvider().GetRequiredService<Serializer>();

    private static ReminderEntry Entry(GrainId grain, string name, int periodSeconds) => new()
    {
        GrainId = grain, ReminderName = name, StartAt = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc), Period = TimeSpan.FromSeconds(periodSeconds),
    };

    [Fact]
    public async Task RowsAreSeenByOtherSilosAndStaleRemovalsAreRefused()
    {
        using var dir = new TempDir();
        var a = new FileReminderTable(dir.Path, NewSerializer());
        var b = new FileReminderTable(dir.Path, NewSerializer());
        var run = GrainId.Create("run", "r/1"); // a key with a character that cannot stand in a file name as it is
        var other = GrainId.Create("run", "r");

        Assert.Null(await a.ReadRow(run, "keep-running"));
        string? first = await a.UpsertRow(Entry(run, "keep-running", 60));
        await a.UpsertRow(Entry(other, "keep-running", 60));
        var read = await b.ReadRow(run, "keep-running");
        Assert.NotNull(read);
        Assert.Equal((run, "keep-running", TimeSpan.FromSeconds(60), first), (read.GrainId, read.ReminderName, read.Period, read.ETag));
        Assert.Equal([run], (await b.ReadRows(run)).Reminders.Select(r => r.GrainId));

        // An upsert replaces the row whatever its ETag; a removal with the older ETag is refused, with the newer one done.
        string? second = await b.UpsertRow(Entry(run, "keep-running", 120));
        Assert.NotEqual(first, second);
        Assert.Equal(TimeSpan.FromSeconds(120), (await a.ReadRow(run, "keep-running"))!.Period);
        Assert.False(await a.RemoveRow(run, "keep-running", first!));
        Assert.True(await a.RemoveRow(run, "keep-running", second!));
        Assert.Null(await b.ReadRow(run, "keep-running"));
        Assert.False(await b.RemoveRow(run, "keep-running", second!));
        Assert.Equal([other], (await b.ReadRows(0, 0)).Reminders.Select(r => r.GrainId));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp", SearchOption.AllDirectories));
    }

    /// <summary>Ranges of Orleans' ring are (begin, end]; one whose begin is not below its end wraps past zero.</summary>
    [Fact]
    public async Task RangeReadsFollowTheRing()
    {
        using var dir = new TempDir();
        var table = new FileReminderTable(dir.Path, NewSerializer());
        var grains = Enumerable.Range(0, 40).Select(i => GrainId.Create("run", $"run-{i}")).ToArray();
        foreach (var grain in grains) await table.UpsertRow(Entry(grain, "keep-running", 60));
        var hashes = grains.Select(g => g.GetUniformHashCode()).Order().ToArray();
        uint low = hashes[10], high = hashes[30];

        async Task<uint[]> Read(uint begin, uint end) =>
            (await table.ReadRows(begin, end)).Reminders.Select(r => r.GrainId.GetUniformHashCode()).Order().ToArray();
        Assert.Equal(hashes[11..31], await Read(low, high));
        Assert.Equal(hashes[..11].Concat(hashes[31..]).Order().ToArray(), await Read(high, low));
        Assert.Equal(hashes, await Read(low, low));
        Assert.Equal([hashes[10]], await Read(hashes[10] - 1, hashes[10]));
    }

    [Fact]
    public async Task AFileThatIsNotAReminderIsNamed()
    {
        using var dir = new TempDir();
        var table = new FileReminderTable(dir.Path, NewSerializer());
        var run = GrainId.Create("run", "x");
        await table.UpsertRow(Entry(run, "keep-running", 60));
        string file = Assert.Single(Directory.GetFiles(dir.Path, "*.reminder", SearchOption.AllDirectories));
        File.WriteAllBytes(file, [1, 2, 3]);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => table.ReadRow(run, "keep-running"));
        Assert.Contains(file, e.Message);
    }
}
