namespace Shears.Pruning.Quantization;

/// <summary>
/// A weight quantization scheme by llm-compressor's preset names: integer weights of <see cref="Bits"/> bits in
/// [−2^(b−1), 2^(b−1)−1], one scale per output channel (<see cref="GroupSize"/> 0) or per group of
/// <see cref="GroupSize"/> consecutive input columns, symmetric (zero point 0) or with an integer zero point.
/// <see cref="DynamicActivations"/>: activations are quantized to int8 at run time (W8A8, ONNX only).
/// </summary>
public sealed record QuantScheme(string Name, int Bits, bool Symmetric, int GroupSize, bool DynamicActivations)
{
    public const string W8A16 = "W8A16", W4A16 = "W4A16", W4A16Asym = "W4A16_ASYM", W8A8 = "W8A8";

    /// <summary>Every scheme name <see cref="Parse"/> accepts.</summary>
    public static readonly string[] Names = [W8A16, W4A16, W4A16Asym, W8A8];

    /// <summary>The default group size of the grouped schemes, as llm-compressor's presets.</summary>
    public const int DefaultGroupSize = 128;

    public int QMin => -(1 << (Bits - 1));
    public int QMax => (1 << (Bits - 1)) - 1;

    /// <summary>One scale per output channel (row), not per group.</summary>
    public bool PerChannel => GroupSize == 0;

    /// <summary>Quantized values in one int32 word of the pack-quantized layout.</summary>
    public int PackFactor => 32 / Bits;

    /// <summary>The input columns one scale covers in a row of <paramref name="columns"/>.</summary>
    public long GroupWidth(long columns) => PerChannel ? columns : GroupSize;

    /// <summary>Scales per row: ceil(columns / group) (the last group may be short), or 1 per channel.</summary>
    public long GroupsPerRow(long columns) => PerChannel ? 1 : (columns + GroupSize - 1) / GroupSize;

    /// <summary>
    /// The scheme named <paramref name="name"/> with <paramref name="groupSize"/> for the grouped ones (W4A16,
    /// W4A16_ASYM); the per-channel ones (W8A16, W8A8) ignore it. Throws naming the option at fault.
    /// </summary>
    public static QuantScheme Parse(string name, int groupSize = DefaultGroupSize)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (groupSize < 1) throw new ArgumentException($"--group-size must be positive, got {groupSize}", nameof(groupSize));
        return name switch
        {
            W8A16 => new QuantScheme(W8A16, 8, true, 0, false),
            W4A16 => new QuantScheme(W4A16, 4, true, groupSize, false),
            W4A16Asym => new QuantScheme(W4A16Asym, 4, false, groupSize, false),
            W8A8 => new QuantScheme(W8A8, 8, true, 0, true),
            _ => throw new ArgumentException($"--quantize must be one of {string.Join(", ", Names)}, got '{name}'", nameof(name)),
        };
    }
}
