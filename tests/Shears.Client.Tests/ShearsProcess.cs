using System.Diagnostics;

namespace Shears.Client.Tests;

/// <summary>Runs the built `shears` command as a user would, in its own process.</summary>
public static class ShearsProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    public static Task<Result> RunAsync(params string[] args) => RunAsync(TimeSpan.FromMinutes(3), args);

    /// <summary>Runs `shears` with <paramref name="args"/> and these environment variables set for it alone.</summary>
    public static Task<Result> RunWithEnvironmentAsync(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        RunAsync(TimeSpan.FromMinutes(3), args, environment);

    public static Task<Result> RunAsync(TimeSpan limit, params string[] args) => RunAsync(limit, args, null);

    /// <summary>
    /// Runs `shears` with <paramref name="args"/>; past <paramref name="limit"/> the process (and what it started) is killed
    /// and the test fails with what it had printed.
    /// </summary>
    private static async Task<Result> RunAsync(TimeSpan limit, string[] args, IReadOnlyDictionary<string, string>? environment)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "shears.dll");
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(dll);
        foreach (string a in args) info.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(limit);
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"shears {string.Join(' ', args)} ran past {limit}\n--- stdout\n{await stdout}\n--- stderr\n{await stderr}");
        }
        return new Result(process.ExitCode, await stdout, await stderr);
    }
}

