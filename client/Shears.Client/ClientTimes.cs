using System.Diagnostics;

namespace Shears.Client;

/// <summary>
/// With SHEARS_TIMES=1 the client prints to stderr when each of its steps ended, in seconds since the process started
/// (the runtime's own start included): what bench/e2e.sh's fixed cost is made of.
/// </summary>
public static class ClientTimes
{
    private static readonly bool Enabled = Environment.GetEnvironmentVariable("SHEARS_TIMES") == "1";
    private static readonly DateTime ProcessStart = Process.GetCurrentProcess().StartTime.ToUniversalTime();

    public static void Mark(string step)
    {
        if (!Enabled) return;
        Console.Error.WriteLine(FormattableString.Invariant($"shears-times: {(DateTime.UtcNow - ProcessStart).TotalSeconds:0.000} s {step}"));
    }
}
