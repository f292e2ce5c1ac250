using System.Runtime;

namespace Shears.Client;

/// <summary>
/// Multi-core JIT for the start of a command that hosts its own silo (`run` and `demo` without --cluster): each such
/// command records which methods it compiled into a small profile, and the next one compiles them on the other cores
/// while its main thread starts the silo (bench/client-floor.sh: the 7 MB embedded run 1.08 s → 0.95 s). A command that
/// reaches a cluster starts too little to gain from it. The profiles live in
/// SHEARS_JIT_PROFILE_DIR, else $XDG_CACHE_HOME/shears or ~/.cache/shears, named after this build so that another
/// build never reads them; SHEARS_JIT_PROFILE_DIR=off turns this off. A folder that cannot be written costs nothing
/// but the speed-up.
/// </summary>
public static class JitProfile
{
    public static void Start(string[] args)
    {
        try
        {
            string kind = Kind(args);
            string? dir = kind is "run-embedded" or "demo-embedded" ? Folder() : null;
            if (dir is null) return;
            Directory.CreateDirectory(dir);
            string name = $"{kind}-{typeof(JitProfile).Assembly.ManifestModule.ModuleVersionId:N}.jitprofile";
            // Earlier builds' profiles of this kind are of no use any more.
            foreach (string old in Directory.EnumerateFiles(dir, $"{kind}-*.jitprofile"))
                if (Path.GetFileName(old) != name) File.Delete(old);
            ProfileOptimization.SetProfileRoot(dir);
            ProfileOptimization.StartProfile(name);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException) { }
    }

    private static string? Folder()
    {
        string? given = Environment.GetEnvironmentVariable("SHEARS_JIT_PROFILE_DIR");
        if (given is { Length: > 0 }) return given == "off" ? null : given;
        string? cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (cache is not { Length: > 0 })
        {
            string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            if (home.Length == 0) return null;
            cache = Path.Combine(home, ".cache");
        }
        return Path.Combine(cache, "shears");
    }

    /// <summary>The command, and for those that reach a cluster how: "run-embedded", "run-http", "list-cluster", …</summary>
    public static string Kind(string[] args)
    {
        string verb = args.Length > 0 && args[0].All(char.IsAsciiLetterLower) ? args[0] : "other";
        int at = Array.IndexOf(args, "--cluster");
        string? cluster = at >= 0 && at + 1 < args.Length ? args[at + 1]
            : args.FirstOrDefault(a => a.StartsWith("--cluster=", StringComparison.Ordinal))?["--cluster=".Length..];
        string how = cluster is null ? "embedded"
            : cluster.StartsWith("http", StringComparison.OrdinalIgnoreCase) ? "http" : "cluster";
        return $"{verb}-{how}";
    }
}
