using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Testing;

namespace Shears.Cluster.Tests;

/// <summary>
/// A model in the Hugging Face cache's layout: the snapshot folder holds only relative links into blobs/, named by their
/// content. Shears reads it as the folder itself, and the report counts the files' bytes, not the links'.
/// </summary>
[Collection(ClusterCollection.Name)]
public class HuggingFaceCacheTests(ClusterFixture fixture)
{
    [Fact]
    public async Task ASnapshotOfLinksPrunesAsTheFilesTheyLeadTo()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("plain"));
        string cache = Path.Combine(dir.Sub("hub"), "models--shears--tiny");
        string snapshot = Path.Combine(cache, "snapshots", "0123abcd");
        Directory.CreateDirectory(Path.Combine(cache, "blobs"));
        Directory.CreateDirectory(snapshot);
        long bytes = 0;
        foreach (string file in Directory.GetFiles(dir.Sub("plain")))
        {
            string blob = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(file)));
            File.Copy(file, Path.Combine(cache, "blobs", blob));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", blob));
            bytes += new FileInfo(file).Length;
        }

        var status = await Runs.RunToEndAsync(fixture.Cluster.Client, new RunSpec
        {
            ModelPath = snapshot, OutputPath = dir.Sub("out"), Sparsity = 0.37, ShardElements = 900,
        });
        Assert.True(status.State == RunState.Completed, status.Error);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("plain"));
        ReferencePruner.AssertOutput(dir.Sub("plain"), dir.Sub("out"), ReferencePruner.Masks(manifest, 0.37, global: true));
        Assert.All(Directory.GetFiles(dir.Sub("out")), f => Assert.Null(new FileInfo(f).LinkTarget)); // files, not links
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "shears-report.json")));
        Assert.Equal(bytes, report.RootElement.GetProperty("size").GetProperty("inputBytes").GetInt64());
    }
}
