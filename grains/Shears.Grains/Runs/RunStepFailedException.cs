namespace Shears.Grains.Runs;

/// <summary>A step of a run failed again after the bounded number of recoveries; the message names the step and its last error.</summary>
public sealed class RunStepFailedException(string message, Exception inner) : Exception(message, inner);
