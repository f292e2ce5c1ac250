using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Shears.Pruning.Encoders;

/// <summary>
/// A BERT encoder exported to ONNX (inputs input_ids, attention_mask, token_type_ids; output last_hidden_state),
/// run by ONNX Runtime on the CPU: the reference the TorchSharp encoder is checked against, and the way to
/// evaluate an exported (pruned) model as its users will run it.
/// </summary>
public sealed class OnnxBertSession : IDisposable
{
    public const string OutputName = "last_hidden_state";

    private readonly InferenceSession _session;
    private readonly bool _takesTokenTypes;

    /// <param name="threads">Intra-op threads; 0 lets ONNX Runtime choose.</param>
    public OnnxBertSession(string modelPath, int threads = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (!File.Exists(modelPath))
        {
            throw new FileNotFoundException($"The ONNX model '{modelPath}' does not exist.", modelPath);
        }
        using var options = new SessionOptions { IntraOpNumThreads = threads };
        // Spinning worker threads starve everything else on a shared machine (a silo, a test run); a batch is long
        // enough that waking them costs nothing measurable.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        _session = new InferenceSession(modelPath, options);
        var inputs = _session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        if (!inputs.Contains("input_ids") || !inputs.Contains("attention_mask") || !_session.OutputMetadata.ContainsKey(OutputName))
        {
            _session.Dispose();
            throw new InvalidDataException(
                $"'{modelPath}' is not a BERT encoder export: it takes [{string.Join(", ", inputs)}] and gives [{string.Join(", ", _session.OutputMetadata.Keys)}]; " +
                $"expected input_ids, attention_mask (and token_type_ids) and {OutputName}.");
        }
        _takesTokenTypes = inputs.Contains("token_type_ids");
        ModelPath = Path.GetFullPath(modelPath);
    }

    public string ModelPath { get; }

    /// <summary>last_hidden_state of <paramref name="batch"/>, row-major [Count, Length, hidden].</summary>
    public float[] LastHiddenState(BertBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        int[] shape = [batch.Count, batch.Length];
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(batch.InputIds, shape)),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(batch.AttentionMask, shape)),
        };
        if (_takesTokenTypes)
        {
            inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>(batch.TokenTypeIds, shape)));
        }
        using var results = _session.Run(inputs, [OutputName]);
        return results.Single().AsTensor<float>().ToArray();
    }

    /// <summary>Sentence embeddings (mean pooling, L2-normalized) of <paramref name="sentences"/>, in their order.</summary>
    public float[][] Embed(IReadOnlyList<string> sentences, BertTextTokenizer tokenizer, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var embeddings = new float[sentences.Count][];
        foreach (var (indices, batch) in SentenceBatches.ByLength(sentences, tokenizer, batchSize))
        {
            var hidden = LastHiddenState(batch);
            var width = hidden.Length / (batch.Count * batch.Length);
            var pooled = BertEncoder.SentenceEmbeddings(hidden, batch.AttentionMask, batch.Count, batch.Length, width);
            for (var i = 0; i < indices.Length; i++)
            {
                embeddings[indices[i]] = pooled[i];
            }
        }
        return embeddings;
    }

    public void Dispose() => _session.Dispose();
}
