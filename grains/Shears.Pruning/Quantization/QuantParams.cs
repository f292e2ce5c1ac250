namespace Shears.Pruning.Quantization;

/// <summary>The scale and integer zero point of one group (or channel): w ≈ (q − ZeroPoint) · Scale.</summary>
public readonly record struct QuantParams(float Scale, int ZeroPoint);
