namespace Shears.Pruning.Checkpoints;

/// <summary>
/// One safetensors file of a checkpoint. <paramref name="HeaderBytes"/> counts the 8-byte length
/// prefix plus the JSON header: the bytes before the data region.
/// </summary>
public sealed record CheckpointFile(string FileName, long HeaderBytes, long FileLength, IReadOnlyDictionary<string, string>? Metadata)
{
    /// <summary>Length of the data region (the file after its header).</summary>
    public long DataLength => FileLength - HeaderBytes;
}
