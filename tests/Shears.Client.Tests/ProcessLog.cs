using System.Diagnostics;

namespace Shears.Client.Tests;

/// <summary>Everything a started process writes to stdout and stderr, kept for a failing test's message.</summary>
public sealed class ProcessLog
{
    private readonly System.Text.StringBuilder _text = new();

    public ProcessLog(Process process)
    {
        process.OutputDataReceived += (_, e) => { lock (_text) _text.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (_text) _text.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public override string ToString() { lock (_text) return _text.ToString(); }
}
