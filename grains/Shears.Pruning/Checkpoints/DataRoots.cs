namespace Shears.Pruning.Checkpoints;

/// <summary>
/// The folders a silo lets runs read and write (<c>--data-root</c>). A path is inside when its real location is: every
/// symbolic link along it followed, <c>.</c> and <c>..</c> taken after the links they follow (as the kernel does), so
/// neither <c>..</c> nor a link inside a root that points elsewhere leads out; the roots are resolved the same way.
/// </summary>
public sealed class DataRoots
{
    private const int MaxLinks = 40; // Linux's own limit on links followed while resolving one path
    private readonly string[] _roots;

    public DataRoots(IEnumerable<string> roots) => _roots = roots.Select(r => WithSlash(RealPath(r))).ToArray();

    /// <summary>No roots: every path is allowed.</summary>
    public bool Unconfined => _roots.Length == 0;

    public IReadOnlyList<string> Roots => _roots;

    /// <summary>
    /// Null when <paramref name="path"/> (and, for a folder, every entry directly in it: the files a run opens) lies inside
    /// a root, else what lies outside — the path or the entry, with the real location it leads to.
    /// </summary>
    public string? Outside(string path)
    {
        if (Unconfined) return null;
        string real = RealPath(path);
        if (!Inside(real)) return real == Path.GetFullPath(path) ? $"'{path}'" : $"'{path}' (which leads to '{real}')";
        if (!Directory.Exists(real)) return null;
        foreach (string entry in Directory.EnumerateFileSystemEntries(real))
        {
            string target = RealPath(entry);
            if (!Inside(target)) return $"'{entry}' (which leads to '{target}')";
        }
        return null;
    }

    private bool Inside(string real) => _roots.Any(r => WithSlash(real).StartsWith(r, StringComparison.Ordinal));

    private static string WithSlash(string path) => path.EndsWith('/') ? path : path + "/";

    /// <summary>
    /// Where <paramref name="path"/> really is: symbolic links along it followed (relative ones from the folder that holds
    /// them), <c>..</c> applied to the folder reached so far. The part past the last existing component is appended as given.
    /// </summary>
    public static string RealPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var pending = new Stack<string>(Components(Path.IsPathRooted(path) ? path : Path.Combine(Environment.CurrentDirectory, path)).Reverse());
        string current = "/";
        int links = 0;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? "/"; continue; }
            string next = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is not { } target)
            {
                current = next;
                continue;
            }
            if (++links > MaxLinks) throw new IOException($"'{path}': more than {MaxLinks} symbolic links to follow");
            foreach (string c in Components(target).Reverse()) pending.Push(c);
            if (Path.IsPathRooted(target)) current = "/";
        }
        return current;
    }

    private static string[] Components(string path) => path.Split('/', StringSplitOptions.RemoveEmptyEntries);
}
