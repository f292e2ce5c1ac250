using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>
/// Tokenized sentences padded to the longest: row-major [Count, Length] arrays of token ids, the padding mask
/// (1 = a real token) and token types (all 0 for single sentences) — the three inputs of a BERT encoder.
/// </summary>
public sealed record BertBatch(long[] InputIds, long[] AttentionMask, long[] TokenTypeIds, int Count, int Length)
{
    /// <summary>Real (unpadded) tokens of row <paramref name="row"/>, [CLS] and [SEP] included.</summary>
    public int TokenCount(int row) => Length - AttentionMask.AsSpan(row * Length, Length).Count(0L);

    /// <summary>The three inputs as int64 tensors [Count, Length] on <paramref name="device"/>, in the caller's dispose scope.</summary>
    public (Tensor InputIds, Tensor AttentionMask, Tensor TokenTypeIds) ToTensors(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        long[] shape = [Count, Length];
        return (tensor(InputIds, shape).to(device), tensor(AttentionMask, shape).to(device), tensor(TokenTypeIds, shape).to(device));
    }
}
