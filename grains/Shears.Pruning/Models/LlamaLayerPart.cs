namespace Shears.Pruning.Models;

/// <summary>
/// How much of a decoder layer one stage computes. A layer too large for any silo's memory budget runs as two
/// stages: <see cref="Attention"/> (input norm, self-attention, its residual) and then <see cref="Mlp"/>
/// (post-attention norm, MLP, its residual); the two compose to exactly what the whole layer computes.
/// </summary>
public enum LlamaLayerPart
{
    Whole,
    Attention,
    Mlp,
}
