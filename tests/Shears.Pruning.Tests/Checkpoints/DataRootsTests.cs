using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Tests.Checkpoints;

public class DataRootsTests
{
    /// <summary>root/model/{a.safetensors, config.json}, root/inner, outside/secret.safetensors, and links between them.</summary>
    private static (TempDir Dir, string Root, string Outside) Tree()
    {
        var dir = new TempDir();
        string root = dir.Sub("root"), outside = dir.Sub("outside");
        Directory.CreateDirectory(Path.Combine(root, "model"));
        Directory.CreateDirectory(Path.Combine(root, "inner"));
        File.WriteAllText(Path.Combine(root, "model", "a.safetensors"), "x");
        File.WriteAllText(Path.Combine(root, "model", "config.json"), "{}");
        File.WriteAllText(Path.Combine(outside, "secret.safetensors"), "s");
        return (dir, root, outside);
    }

    [Fact]
    public void PathsInsideARootAreAllowedAndTheRestNamed()
    {
        var (dir, root, outside) = Tree();
        using var _ = dir;
        var roots = new DataRoots([root]);
        Assert.Null(roots.Outside(Path.Combine(root, "model")));
        Assert.Null(roots.Outside(Path.Combine(root, "model", "a.safetensors")));
        Assert.Null(roots.Outside(Path.Combine(root, "not-yet", "out"))); // an output folder that does not exist yet
        Assert.Equal($"'{outside}'", roots.Outside(outside));
        // A sibling whose name starts like the root's is not inside it.
        Directory.CreateDirectory(root + "-2");
        Assert.NotNull(roots.Outside(root + "-2"));
        Assert.True(new DataRoots([]).Unconfined);
        Assert.Null(new DataRoots([]).Outside(outside));
    }

    [Fact]
    public void DotDotLeadsOutAfterTheLinksBeforeIt()
    {
        var (dir, root, outside) = Tree();
        using var _ = dir;
        var roots = new DataRoots([root]);
        Assert.NotNull(roots.Outside(Path.Combine(root, "..", "outside", "secret.safetensors")));
        Assert.Null(roots.Outside(Path.Combine(root, "inner", "..", "model")));
        // root/deep → root/inner/x/y: root/deep/../.. is root/inner, inside; root/up → outside's folder: up/.. is the parent of outside.
        Directory.CreateDirectory(Path.Combine(root, "inner", "x", "y"));
        File.CreateSymbolicLink(Path.Combine(root, "deep"), Path.Combine(root, "inner", "x", "y"));
        Assert.Equal(Path.Combine(root, "inner"), DataRoots.RealPath(Path.Combine(root, "deep", "..", "..")));
        Assert.Null(roots.Outside(Path.Combine(root, "deep", "..", "..")));
        File.CreateSymbolicLink(Path.Combine(root, "up"), outside);
        Assert.Equal(dir.Path, DataRoots.RealPath(Path.Combine(root, "up", "..")));
    }

    [Fact]
    public void SymbolicLinksAreFollowedAbsoluteRelativeAndChained()
    {
        var (dir, root, outside) = Tree();
        using var _ = dir;
        var roots = new DataRoots([root]);
        File.CreateSymbolicLink(Path.Combine(root, "abs"), outside);
        File.CreateSymbolicLink(Path.Combine(root, "rel"), Path.Combine("..", "outside"));
        File.CreateSymbolicLink(Path.Combine(root, "chain"), "rel");
        File.CreateSymbolicLink(Path.Combine(root, "inside"), "model");
        foreach (string link in new[] { "abs", "rel", "chain" })
        {
            string? found = roots.Outside(Path.Combine(root, link, "secret.safetensors"));
            Assert.NotNull(found);
            Assert.Contains(Path.Combine(outside, "secret.safetensors"), found);
        }
        Assert.Null(roots.Outside(Path.Combine(root, "inside", "a.safetensors")));
        // A file of the model folder that links out makes the folder outside, naming the file.
        File.CreateSymbolicLink(Path.Combine(root, "model", "tokenizer.json"), Path.Combine(outside, "secret.safetensors"));
        Assert.Contains("tokenizer.json", roots.Outside(Path.Combine(root, "model")));
        // A root given through a link is resolved too.
        Assert.Null(new DataRoots([Path.Combine(root, "abs")]).Outside(Path.Combine(outside, "secret.safetensors")));
    }

    [Fact]
    public void ALinkLoopIsAnError()
    {
        var (dir, root, _) = Tree();
        using var __ = dir;
        File.CreateSymbolicLink(Path.Combine(root, "a"), "b");
        File.CreateSymbolicLink(Path.Combine(root, "b"), "a");
        var e = Assert.Throws<IOException>(() => DataRoots.RealPath(Path.Combine(root, "a", "x")));
        Assert.Contains("symbolic links", e.Message);
    }
}
