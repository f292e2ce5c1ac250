using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>The multi-core JIT profile of commands that host their own silo: where it goes, and that it changes nothing else.</summary>
public class JitProfileTests
{
    [Theory]
    [InlineData("run-embedded", new[] { "run", "--model", "m", "--out", "o", "--sparsity", "0.5" })]
    [InlineData("run-http", new[] { "run", "--model", "m", "--cluster", "http://127.0.0.1:8080" })]
    [InlineData("run-http", new[] { "run", "--cluster=https://silo:8443", "--model", "m" })]
    [InlineData("run-cluster", new[] { "run", "--cluster", "redis://127.0.0.1:6379" })]
    [InlineData("list-cluster", new[] { "list", "--cluster", "127.0.0.1:30000" })]
    [InlineData("demo-embedded", new[] { "demo" })]
    [InlineData("other-embedded", new[] { "--help" })]
    [InlineData("other-embedded", new string[0])]
    public void EachKindOfCommandHasItsOwnProfile(string kind, string[] args) => Assert.Equal(kind, JitProfile.Kind(args));

    [Fact]
    public async Task AnEmbeddedRunRecordsItsProfileAndAFolderItCannotWriteChangesNothing()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        string[] Run(string output) => ["run", "--model", dir.Sub("in"), "--out", dir.Sub(output), "--sparsity", "0.5"];
        var first = await ShearsProcess.RunWithEnvironmentAsync(new Dictionary<string, string> { ["SHEARS_JIT_PROFILE_DIR"] = dir.Sub("profiles") }, Run("first"));
        Assert.True(first.ExitCode == 0, first.ToString());
        var profile = Assert.Single(Directory.GetFiles(dir.Sub("profiles")));
        Assert.StartsWith("run-embedded-", Path.GetFileName(profile));
        Assert.True(new FileInfo(profile).Length > 0);
        // The next run reads it (and records it again); its output is the first one's.
        var second = await ShearsProcess.RunWithEnvironmentAsync(new Dictionary<string, string> { ["SHEARS_JIT_PROFILE_DIR"] = dir.Sub("profiles") }, Run("second"));
        Assert.True(second.ExitCode == 0, second.ToString());
        Outputs.AssertSameFiles(dir.Sub("first"), dir.Sub("second"));
        // A folder that is a file: no profile, the same run.
        File.WriteAllText(dir.Sub("a-file"), "");
        var unwritable = await ShearsProcess.RunWithEnvironmentAsync(new Dictionary<string, string> { ["SHEARS_JIT_PROFILE_DIR"] = dir.Sub("a-file") }, Run("third"));
        Assert.True(unwritable.ExitCode == 0, unwritable.ToString());
        Assert.Equal("", unwritable.Stderr);
        Outputs.AssertSameFiles(dir.Sub("first"), dir.Sub("third"));
    }
}
