using System.Diagnostics;
using Shears.Pruning.Encoders;
using TorchSharp;

namespace Shears.Pruning.Evaluation;

/// <summary>Which implementation embeds the sentences.</summary>
public enum EncoderRuntime
{
    /// <summary>ONNX Runtime on the exported model file, as its users run it.</summary>
    OnnxRuntime,

    /// <summary>Shears' TorchSharp <see cref="BertEncoder"/>, loaded from the model file onto the device given.</summary>
    TorchSharp,
}

/// <summary>Every encoder measure of one pruned model against its dense original.</summary>
/// <param name="Sentences">Pairs measured: fidelity and neighbours over their matches, retrieval from queries to matches.</param>
/// <param name="DenseRetrieval">The dense model's own retrieval, the ceiling the pruned model is compared with.</param>
public sealed record MiniLmQualityReport(
    int Sentences,
    FidelityResult Fidelity,
    double NeighbourAgreement,
    ParaphraseRetrievalResult Retrieval,
    RetrievalResult DenseRetrieval,
    double Seconds);

/// <summary>
/// The quality of a pruned all-MiniLM-L6-v2 (or any BERT sentence encoder exported to ONNX) measured against the
/// dense model on aligned sentence pairs, e.g. data/bible-ot-sample-2000.tsv (KJV query, WEB match):
/// fidelity and neighbour agreement@10 over the match sentences, paraphrase retrieval from queries to matches.
/// </summary>
public static class MiniLmQuality
{
    public static MiniLmQualityReport Measure(
        string denseModelPath,
        string prunedModelPath,
        string vocabularyPath,
        IReadOnlyList<SentencePair> pairs,
        EncoderRuntime runtime = EncoderRuntime.OnnxRuntime,
        torch.Device? device = null,
        int batchSize = 32)
    {
        ArgumentException.ThrowIfNullOrEmpty(denseModelPath);
        ArgumentException.ThrowIfNullOrEmpty(prunedModelPath);
        ArgumentNullException.ThrowIfNull(pairs);
        if (pairs.Count <= EmbeddingQuality.DefaultNeighbours)
        {
            throw new ArgumentException($"Neighbour agreement@{EmbeddingQuality.DefaultNeighbours} needs more than {EmbeddingQuality.DefaultNeighbours} pairs; got {pairs.Count}.", nameof(pairs));
        }
        var clock = Stopwatch.StartNew();
        var tokenizer = BertTextTokenizer.Create(vocabularyPath);
        var queries = pairs.Select(p => p.Query).ToArray();
        var matches = pairs.Select(p => p.Match).ToArray();

        var (denseQueries, denseMatches) = Embed(denseModelPath, runtime, device, tokenizer, queries, matches, batchSize);
        var (prunedQueries, prunedMatches) = Embed(prunedModelPath, runtime, device, tokenizer, queries, matches, batchSize);

        return new MiniLmQualityReport(
            pairs.Count,
            EmbeddingQuality.Fidelity(denseMatches, prunedMatches),
            EmbeddingQuality.NeighbourAgreement(denseMatches, prunedMatches),
            ParaphraseRetrieval.Measure(prunedQueries, prunedMatches, denseMatches),
            ParaphraseRetrieval.Measure(denseQueries, denseMatches),
            clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// Sentence embeddings of <paramref name="sentences"/> by the model at <paramref name="modelPath"/>; the TorchSharp
    /// runtime computes on <paramref name="device"/> (the CPU when null).
    /// </summary>
    public static float[][] Embed(string modelPath, EncoderRuntime runtime, BertTextTokenizer tokenizer, IReadOnlyList<string> sentences,
        torch.Device? device = null, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        return Embed(modelPath, runtime, device, tokenizer, sentences, [], batchSize).First;
    }

    private static (float[][] First, float[][] Second) Embed(string modelPath, EncoderRuntime runtime, torch.Device? device, BertTextTokenizer tokenizer,
        IReadOnlyList<string> first, IReadOnlyList<string> second, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        switch (runtime)
        {
            case EncoderRuntime.OnnxRuntime:
                using (var session = new OnnxBertSession(modelPath))
                {
                    return (session.Embed(first, tokenizer, batchSize), session.Embed(second, tokenizer, batchSize));
                }
            case EncoderRuntime.TorchSharp:
                using (var encoder = BertEncoder.Load(modelPath, device ?? torch.CPU))
                {
                    return (encoder.Embed(first, tokenizer, batchSize), encoder.Embed(second, tokenizer, batchSize));
                }
            default:
                throw new ArgumentOutOfRangeException(nameof(runtime), runtime, "Unknown encoder runtime.");
        }
    }
}
