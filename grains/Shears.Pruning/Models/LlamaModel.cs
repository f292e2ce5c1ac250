using Shears.Pruning.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// A LLaMA-family causal LM as its pipeline stages: the embedding, the decoder layers in order, the
/// head. In one process it runs them back to back; across grains each stage is built on its own.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    private bool _disposed;

    private LlamaModel(LlamaConfig config, LlamaEmbedding embedding, IReadOnlyList<LlamaDecoderLayer> layers, LlamaHead head)
    {
        Config = config;
        Embedding = embedding;
        Layers = layers;
        Head = head;
        Stages = [embedding, .. layers, head];
        foreach (var stage in Stages)
        {
            foreach (var (name, weight) in stage.Parameters)
            {
                _parameters.TryAdd(name, weight); // a tied embedding appears in two stages, once here
            }
        }
    }

    public LlamaConfig Config { get; }

    public LlamaEmbedding Embedding { get; }

    public IReadOnlyList<LlamaDecoderLayer> Layers { get; }

    public LlamaHead Head { get; }

    /// <summary>Embedding, decoder layers, head: the order activations flow in.</summary>
    public IReadOnlyList<LlamaStage> Stages { get; }

    public Device Device => Embedding.Device;

    public ScalarType DType => Embedding.DType;

    /// <summary>Every weight by Hugging Face name; a tied embedding once, as model.embed_tokens.weight.</summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>Token ids [B, T] (int64) to logits [B, T, vocab], in the caller's dispose scope.</summary>
    public Tensor Forward(Tensor tokenIds)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var x = Embedding.Forward(tokenIds);
        foreach (var layer in Layers)
        {
            var next = layer.Forward(x);
            x.Dispose(); // keep one activation alive at a time; autograd holds what backward needs
            x = next;
        }
        return Head.Forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>Turns gradient tracking of every weight on or off.</summary>
    public void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var weight in _parameters.Values)
        {
            weight.requires_grad_(requiresGrad);
        }
    }

    /// <summary>
    /// Reads config.json and the weights of the Hugging Face checkpoint in <paramref name="checkpointDir"/>
    /// (safetensors, one file or sharded; F32, F16 or BF16) onto <paramref name="device"/> as <paramref name="dtype"/>,
    /// one stage at a time.
    /// </summary>
    public static LlamaModel Load(string checkpointDir, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentException.ThrowIfNullOrEmpty(checkpointDir);
        ArgumentNullException.ThrowIfNull(device);
        var config = LlamaConfig.Load(Directory.Exists(checkpointDir) ? checkpointDir : Path.GetDirectoryName(Path.GetFullPath(checkpointDir))!);
        var manifest = CheckpointReader.ReadManifest(checkpointDir);
        try
        {
            return Build(config, device, dtype, names => LlamaWeights.Read(manifest, names, device, dtype), disposeTensors: true,
                layerNames: i => LlamaWeights.LayerNames(manifest, i));
        }
        catch (ArgumentException e)
        {
            // A missing or misshapen tensor is the checkpoint's fault, not the caller's.
            throw new CheckpointFormatException(manifest.Root, null, e.Message, e);
        }
    }

    /// <summary>
    /// Builds every stage from tensors by Hugging Face name. Weights share storage with the given tensors
    /// when no conversion is needed; the caller keeps ownership of its tensors.
    /// </summary>
    public static LlamaModel FromTensors(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        return Build(config, device, dtype, _ => tensors, disposeTensors: false, layerNames: _ => []);
    }

    private static LlamaModel Build(LlamaConfig config, Device device, ScalarType dtype,
        Func<IEnumerable<string>, IReadOnlyDictionary<string, Tensor>> source, bool disposeTensors, Func<int, IReadOnlyList<string>> layerNames)
    {
        config.Validate();
        return StageBuilder<LlamaStage>.Build(source, disposeTensors, builder =>
        {
            var embedding = builder.Stage(LlamaWeights.EmbeddingNames(), t => LlamaEmbedding.FromTensors(config, t, device, dtype));
            var layers = new List<LlamaDecoderLayer>(config.NumHiddenLayers);
            for (var i = 0; i < config.NumHiddenLayers; i++)
            {
                var index = i;
                layers.Add(builder.Stage(layerNames(i), t => LlamaDecoderLayer.FromTensors(config, index, t, device, dtype)));
            }
            var head = config.TieWordEmbeddings
                ? builder.Stage([LlamaWeights.FinalNormName], t => LlamaHead.TiedTo(embedding, t))
                : builder.Stage(LlamaWeights.HeadNames(config), t => LlamaHead.FromTensors(config, t, device, dtype));
            return new LlamaModel(config, embedding, layers, head);
        });
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        // The head is disposed before the embedding it may borrow from; borrowed weights are not disposed twice.
        for (var i = Stages.Count - 1; i >= 0; i--)
        {
            Stages[i].Dispose();
        }
    }
}
