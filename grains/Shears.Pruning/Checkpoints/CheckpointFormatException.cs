namespace Shears.Pruning.Checkpoints;

/// <summary>A checkpoint file or index is malformed; the message names the file, the tensor and what was expected.</summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Describe(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
        Problem = problem;
    }

    /// <summary>The file at fault (a safetensors file, an index, or the path that was given).</summary>
    public string FilePath { get; }

    /// <summary>The tensor at fault, when the problem belongs to one.</summary>
    public string? TensorName { get; }

    /// <summary>What was wrong, without the file and tensor prefix.</summary>
    public string Problem { get; }

    private static string Describe(string filePath, string? tensorName, string problem) =>
        tensorName is null
            ? $"Checkpoint file '{filePath}': {problem}"
            : $"Checkpoint file '{filePath}', tensor '{tensorName}': {problem}";
}

/// <summary>A checkpoint file changed while a run was reading it; the message names the file, a tensor in it and the change.</summary>
public sealed class CheckpointChangedException(string filePath, string tensorName, string change)
    : IOException($"Checkpoint file '{filePath}' (tensor '{tensorName}') changed while the run was reading it: {change}. "
                  + "A checkpoint must stay as it is until its run ends; start the run again.")
{
    public string FilePath { get; } = filePath;
    public string TensorName { get; } = tensorName;
}
