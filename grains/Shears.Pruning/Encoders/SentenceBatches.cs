namespace Shears.Pruning.Encoders;

/// <summary>Batches of sentences of similar token length, so that an encoder computes little padding.</summary>
public static class SentenceBatches
{
    /// <summary>
    /// Tokenizes every sentence, orders them by token count (stable, so the batches are deterministic) and yields
    /// batches of at most <paramref name="batchSize"/>, each with the positions of its sentences in the input.
    /// </summary>
    public static IEnumerable<(int[] Indices, BertBatch Batch)> ByLength(IReadOnlyList<string> sentences, BertTextTokenizer tokenizer, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        // Tokenized once: the lengths order the sentences, the same tokens fill the batches.
        var tokens = sentences.Select(tokenizer.Tokenize).ToArray();
        var order = Enumerable.Range(0, sentences.Count).OrderBy(i => tokens[i].Count).ThenBy(i => i).ToArray();
        for (var start = 0; start < order.Length; start += batchSize)
        {
            var indices = order[start..Math.Min(order.Length, start + batchSize)];
            yield return (indices, tokenizer.Batch([.. indices.Select(i => tokens[i])]));
        }
    }
}
