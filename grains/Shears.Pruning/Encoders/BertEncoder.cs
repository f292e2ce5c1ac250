using Shears.Pruning.Checkpoints;
using Shears.Pruning.Onnx;
using TorchSharp;
using static TorchSharp.torch;

using Shears.Pruning.Models;

namespace Shears.Pruning.Encoders;

/// <summary>
/// A BERT encoder (all-MiniLM-L6-v2 and its kin) as its pipeline stages: the embeddings, then the encoder layers
/// in order; the output is last_hidden_state. In one process it runs them back to back; across grains each stage
/// is built on its own from the tensors a shard holds.
/// </summary>
public sealed class BertEncoder : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    private bool _disposed;

    private BertEncoder(BertConfig config, BertWeightNames names, BertEmbeddings embeddings, IReadOnlyList<BertLayer> layers)
    {
        Config = config;
        Names = names;
        Embeddings = embeddings;
        Layers = layers;
        Stages = [embeddings, .. layers];
        foreach (var stage in Stages)
        {
            foreach (var (name, weight) in stage.Parameters)
            {
                _parameters.Add(name, weight);
            }
        }
    }

    public BertConfig Config { get; }

    public BertWeightNames Names { get; }

    public BertEmbeddings Embeddings { get; }

    public IReadOnlyList<BertLayer> Layers { get; }

    /// <summary>Embeddings, then the encoder layers: the order activations flow in.</summary>
    public IReadOnlyList<BertStage> Stages { get; }

    public Device Device => Embeddings.Device;

    public ScalarType DType => Embeddings.DType;

    /// <summary>Every weight by checkpoint name.</summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>
    /// last_hidden_state [B, T, hidden] of token ids [B, T], the padding mask [B, T] (1 = a real token) and token
    /// types [B, T] (all zeros when null), in the caller's dispose scope. Inputs are not disposed.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor? tokenTypeIds = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(attentionMask);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var x = Embeddings.Forward(inputIds, tokenTypeIds);
        foreach (var layer in Layers)
        {
            var next = layer.Forward(x, attentionMask);
            x.Dispose(); // one activation alive at a time; autograd keeps what backward needs
            x = next;
        }
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>last_hidden_state of a tokenized batch, in the caller's dispose scope.</summary>
    public Tensor Forward(BertBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        using var scope = NewDisposeScope();
        var (ids, mask, types) = batch.ToTensors(Device);
        return Forward(ids, mask, types).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sentence embeddings (mean pooling over real tokens, L2-normalized) of <paramref name="sentences"/>, in their
    /// order. Sentences are batched by token length, so little padding is computed; padding changes nothing else.
    /// </summary>
    public float[][] Embed(IReadOnlyList<string> sentences, BertTextTokenizer tokenizer, int batchSize = 32)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var embeddings = new float[sentences.Count][];
        foreach (var (indices, batch) in SentenceBatches.ByLength(sentences, tokenizer, batchSize))
        {
            using var scope = NewDisposeScope();
            var (ids, mask, types) = batch.ToTensors(Device);
            using var _ = no_grad();
            var pooled = SentenceEmbeddings(Forward(ids, mask, types), mask);
            for (var i = 0; i < indices.Length; i++)
            {
                embeddings[indices[i]] = pooled[i];
            }
        }
        return embeddings;
    }

    /// <summary>
    /// sentence-transformers' recipe for all-MiniLM-L6-v2: the mean of last_hidden_state [B, T, hidden] over the
    /// positions where <paramref name="attentionMask"/> [B, T] is 1 (at least one counted, 1e-9), then divided by
    /// its L2 norm (at least 1e-12). One fp32 vector per row.
    /// </summary>
    public static float[][] SentenceEmbeddings(Tensor lastHiddenState, Tensor attentionMask)
    {
        ArgumentNullException.ThrowIfNull(lastHiddenState);
        ArgumentNullException.ThrowIfNull(attentionMask);
        if (lastHiddenState.dim() != 3 || attentionMask.dim() != 2
            || attentionMask.shape[0] != lastHiddenState.shape[0] || attentionMask.shape[1] != lastHiddenState.shape[1])
        {
            throw new ArgumentException(
                $"Pooling needs hidden states [B, T, hidden] and a mask [B, T]; got [{string.Join(", ", lastHiddenState.shape)}] and [{string.Join(", ", attentionMask.shape)}].");
        }
        using var scope = NewDisposeScope();
        var h = lastHiddenState.detach().to(ScalarType.Float32);
        var m = attentionMask.to(ScalarType.Float32, h.device).unsqueeze(-1);
        // Scalars held for the calls: TorchSharp may finalize an implicit one while libtorch reads it.
        using var tinyCount = 1e-9.ToScalar();
        using var tinyNorm = 1e-12.ToScalar();
        var mean = (h * m).sum(1) / m.sum(1).clamp_min(tinyCount);
        var unit = mean / mean.norm(1, keepdim: true).clamp_min(tinyNorm);
        var (rows, width) = ((int)unit.shape[0], (int)unit.shape[1]);
        var flat = unit.cpu().contiguous().data<float>().ToArray();
        return [.. Enumerable.Range(0, rows).Select(r => flat.AsSpan(r * width, width).ToArray())];
    }

    /// <summary>The same pooling over a row-major last_hidden_state [count, length, width] held in host memory (ONNX Runtime's output).</summary>
    public static float[][] SentenceEmbeddings(ReadOnlySpan<float> lastHiddenState, ReadOnlySpan<long> attentionMask, int count, int length, int width)
    {
        if (lastHiddenState.Length != (long)count * length * width || attentionMask.Length != (long)count * length)
        {
            throw new ArgumentException(
                $"Pooling [{count}, {length}, {width}] needs {(long)count * length * width} hidden values and {(long)count * length} mask values; got {lastHiddenState.Length} and {attentionMask.Length}.");
        }
        var result = new float[count][];
        var sum = new double[width];
        for (var r = 0; r < count; r++)
        {
            Array.Clear(sum);
            double tokens = 0;
            for (var t = 0; t < length; t++)
            {
                var weight = attentionMask[r * length + t];
                if (weight == 0)
                {
                    continue;
                }
                tokens += weight;
                var row = lastHiddenState.Slice((r * length + t) * width, width);
                for (var d = 0; d < width; d++)
                {
                    sum[d] += weight * row[d];
                }
            }
            var scale = 1.0 / Math.Max(tokens, 1e-9);
            double norm = 0;
            for (var d = 0; d < width; d++)
            {
                sum[d] *= scale;
                norm += sum[d] * sum[d];
            }
            var inverse = 1.0 / Math.Max(Math.Sqrt(norm), 1e-12);
            var vector = new float[width];
            for (var d = 0; d < width; d++)
            {
                vector[d] = (float)(sum[d] * inverse);
            }
            result[r] = vector;
        }
        return result;
    }

    /// <summary>Reads the ONNX model at <paramref name="onnxPath"/> (a Hugging Face BERT export) onto <paramref name="device"/>, one stage at a time.</summary>
    public static BertEncoder Load(string onnxPath, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentException.ThrowIfNullOrEmpty(onnxPath);
        return FromOnnx(OnnxModel.Read(onnxPath), device, dtype);
    }

    /// <summary>Builds every stage from the initializers of <paramref name="model"/>; the config comes from the graph (<see cref="BertConfig.FromOnnx"/>).</summary>
    public static BertEncoder FromOnnx(OnnxModel model, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(device);
        var names = BertWeightNames.FromOnnx(model);
        var config = BertConfig.FromOnnx(model, names);
        try
        {
            return Build(config, names, device, dtype, n => BertWeightNames.Read(model, n, device, dtype), disposeTensors: true);
        }
        catch (ArgumentException e)
        {
            // A missing or misshapen tensor is the model file's fault, not the caller's.
            throw new CheckpointFormatException(model.FilePath, null, e.Message, e);
        }
    }

    /// <summary>
    /// Builds every stage from tensors by checkpoint name. Weights share storage with the given tensors when no
    /// conversion is needed; the caller keeps ownership of its tensors.
    /// </summary>
    public static BertEncoder FromTensors(BertConfig config, BertWeightNames names, IReadOnlyDictionary<string, Tensor> tensors,
        Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(tensors);
        return Build(config, names, device, dtype, _ => tensors, disposeTensors: false);
    }

    private static BertEncoder Build(BertConfig config, BertWeightNames names, Device device, ScalarType dtype,
        Func<IEnumerable<string>, IReadOnlyDictionary<string, Tensor>> source, bool disposeTensors)
    {
        config.Validate();
        if (names.Layers.Count != config.NumHiddenLayers)
        {
            throw new ArgumentException($"The weight names describe {names.Layers.Count} layers; the config has {config.NumHiddenLayers}.");
        }
        return StageBuilder<BertStage>.Build(source, disposeTensors, builder =>
        {
            var embeddings = builder.Stage(names.Embeddings.All, t => BertEmbeddings.FromTensors(config, names.Embeddings, t, device, dtype));
            var layers = new List<BertLayer>(config.NumHiddenLayers);
            for (var i = 0; i < config.NumHiddenLayers; i++)
            {
                var index = i;
                layers.Add(builder.Stage(names.Layers[i].All, t => BertLayer.FromTensors(config, index, names.Layers[index], t, device, dtype)));
            }
            return new BertEncoder(config, names, embeddings, layers);
        });
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var stage in Stages)
        {
            stage.Dispose();
        }
    }
}
