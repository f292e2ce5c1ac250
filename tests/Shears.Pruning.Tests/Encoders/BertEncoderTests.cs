using Shears.Pruning.Encoders;
using Shears.Pruning.Evaluation;
using Shears.Pruning.Onnx;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Encoders;

[Collection(MiniLmEncoderCollection.Name)]
public class BertEncoderTests(MiniLmEncoderFixture miniLm, ITestOutputHelper output)
{
    // numpy.allclose's test: |expected − actual| ≤ Tolerance + RelativeTolerance·|expected| for every element. ONNX Runtime
    // and libtorch pick kernels by CPU and sum in different orders (1.03e-4 apart on an AMD EPYC with AVX-512), and hidden
    // states reach magnitudes of 10 and more.
    private const double Tolerance = 1e-4, RelativeTolerance = 1e-5;

    /// <summary>The largest excess of |expected − actual| over the relative part of the tolerance (compare with <see cref="Tolerance"/>).</summary>
    private static double MaxExcess(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        return expected.Zip(actual, (e, a) => Math.Abs((double)e - a) - RelativeTolerance * Math.Abs(e)).Max();
    }

    private static float[] LastHiddenState(BertEncoder encoder, BertBatch batch)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var hidden = encoder.Forward(batch);
        Assert.Equal([batch.Count, batch.Length, 384L], hidden.shape);
        return hidden.data<float>().ToArray();
    }

    private static double MaxAbsDifference(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        return expected.Zip(actual, (e, a) => Math.Abs((double)e - a)).Max();
    }

    [Fact]
    public void TheConfigAndTheWeightNamesComeFromTheGraph()
    {
        var config = BertConfig.FromOnnx(miniLm.Model);
        Assert.Equal(BertConfig.MiniLmL6V2, config);
        Assert.Equal(32, config.HeadDim);

        var names = miniLm.Encoder.Names;
        var prunable = miniLm.Model.FindPrunable();
        Assert.Equal(6, names.Layers.Count);
        for (var layer = 0; layer < 6; layer++)
        {
            Assert.Equal(prunable.Where(p => p.Layer == layer).Select(p => p.Name), names.Layers[layer].Matrices);
        }
        Assert.Equal(prunable.Single(p => p.Layer == 3 && p.Role == "intermediate").Name, miniLm.Encoder.Layers[3].Names.Intermediate);
        Assert.Equal("encoder.layer.3.intermediate.dense.bias", miniLm.Encoder.Layers[3].Names.IntermediateBias);
    }

    [Fact]
    public void EveryWeightIsLoadedByItsInitializerName()
    {
        var encoder = miniLm.Encoder;
        Assert.Equal(7, encoder.Stages.Count);
        Assert.Equal(5 + 6 * 16, encoder.Parameters.Count);
        // Everything but the pooler and the graph's int64 shape constants.
        var floats = miniLm.Model.Initializers
            .Where(i => i.ElementType == OnnxElementType.Float && !i.Name.StartsWith("pooler.", StringComparison.Ordinal))
            .Select(i => i.Name);
        Assert.Equal(floats.Order(StringComparer.Ordinal), encoder.Parameters.Keys.Order(StringComparer.Ordinal));

        var query2 = encoder.Layers[2].Names.Query;
        Assert.Equal(MiniLmPruning.Floats(miniLm.Model, query2), encoder.Parameters[query2].data<float>().ToArray());
        Assert.Equal([384L, 1536], encoder.Layers[2].Intermediate.shape); // [in, out], as stored
        Assert.All(encoder.Parameters.Values, p => Assert.Equal(ScalarType.Float32, p.dtype));
    }

    [Fact]
    public void MatchesOnnxRuntimeOnTheDenseModel()
    {
        var batch = miniLm.Tokenizer.Encode(MiniLmEncoderFixture.Sentences);
        Assert.True(Enumerable.Range(0, batch.Count).Select(batch.TokenCount).Distinct().Count() > 4, "the batch is padded");

        var expected = miniLm.Session.LastHiddenState(batch);
        var actual = LastHiddenState(miniLm.Encoder, batch);

        var difference = MaxAbsDifference(expected, actual);
        output.WriteLine($"dense: max |TorchSharp − ONNX Runtime| over last_hidden_state [{batch.Count}, {batch.Length}, 384] = {difference:E2}");
        Assert.True(MaxExcess(expected, actual) <= Tolerance, $"max |difference| {difference}");
    }

    [Fact]
    public void MatchesOnnxRuntimeOnAModelWithHalfOfEachMatrixZeroed()
    {
        var pruned = OnnxModel.Read(miniLm.PrunedPath);
        var query0 = MiniLmPruning.Floats(pruned, pruned.FindPrunable()[0].Name);
        Assert.Equal(query0.Length / 2, query0.Count(v => v == 0));

        var batch = miniLm.Tokenizer.Encode(MiniLmEncoderFixture.Sentences);
        using var session = new OnnxBertSession(miniLm.PrunedPath);
        using var encoder = BertEncoder.FromOnnx(pruned, CPU);
        var expected = session.LastHiddenState(batch);
        var actual = LastHiddenState(encoder, batch);

        var difference = MaxAbsDifference(expected, actual);
        output.WriteLine($"50% per matrix: max |TorchSharp − ONNX Runtime| = {difference:E2}");
        Assert.True(MaxExcess(expected, actual) <= Tolerance, $"max |difference| {difference}");
        Assert.True(MaxAbsDifference(miniLm.Session.LastHiddenState(batch), expected) > 0.1, "pruning changed the outputs");
    }

    [Fact]
    public void TheStagesRunOneByOneGiveTheWholeForward()
    {
        var batch = miniLm.Tokenizer.Encode(MiniLmEncoderFixture.Sentences.Take(3).ToArray());
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (ids, mask, types) = batch.ToTensors(CPU);
        var x = miniLm.Encoder.Embeddings.Forward(ids, types);
        foreach (var layer in miniLm.Encoder.Layers)
        {
            x = layer.Forward(x, mask);
        }
        var whole = miniLm.Encoder.Forward(ids, mask, types);
        Assert.Equal(0, (x - whole).abs().max().item<float>());
        Assert.Equal("encoder layer 5", miniLm.Encoder.Layers[5].Description);
    }

    [Fact]
    public void SentenceEmbeddingsAreUnitMeansOverRealTokensAndMatchOnnxRuntime()
    {
        var sentences = MiniLmEncoderFixture.Sentences;
        var torchEmbeddings = miniLm.Encoder.Embed(sentences, miniLm.Tokenizer, batchSize: 3);
        var onnxEmbeddings = miniLm.Session.Embed(sentences, miniLm.Tokenizer, batchSize: 4);

        Assert.Equal(sentences.Count, torchEmbeddings.Length);
        Assert.All(torchEmbeddings, e => Assert.Equal(1.0, Math.Sqrt(e.Sum(v => (double)v * v)), 5));
        Assert.All(Enumerable.Range(0, sentences.Count), i => Assert.True(EmbeddingQuality.Cosine(torchEmbeddings[i], onnxEmbeddings[i]) > 0.999999));

        // Alone or padded in a batch, a sentence has the same embedding.
        var alone = miniLm.Encoder.Embed([sentences[5]], miniLm.Tokenizer);
        Assert.True(torchEmbeddings[5].Zip(alone[0], (a, b) => Math.Abs(a - b)).Max() < 1e-5);

        // Mean pooling by hand over the real tokens of one row.
        var batch = miniLm.Tokenizer.Encode(sentences);
        var hidden = miniLm.Session.LastHiddenState(batch);
        var row = 2;
        var tokens = batch.TokenCount(row);
        var mean = Enumerable.Range(0, 384).Select(d => Enumerable.Range(0, tokens).Average(t => (double)hidden[(row * batch.Length + t) * 384 + d])).ToArray();
        var norm = Math.Sqrt(mean.Sum(v => v * v));
        Assert.True(mean.Select((v, d) => Math.Abs(v / norm - onnxEmbeddings[row][d])).Max() < 1e-6);
    }

    [Fact]
    public void ParaphrasesAreCloserThanUnrelatedSentences()
    {
        var e = miniLm.Encoder.Embed(["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."], miniLm.Tokenizer);
        Assert.True(EmbeddingQuality.Cosine(e[0], e[1]) > EmbeddingQuality.Cosine(e[0], e[2]) + 0.2);
    }

    [Fact]
    public void EmbeddingLeavesNoTensorBehind()
    {
        var statistics = DisposeScopeManager.Statistics;
        statistics.Reset();
        miniLm.Encoder.Embed(MiniLmEncoderFixture.Sentences.Take(3).ToArray(), miniLm.Tokenizer, batchSize: 2);
        Assert.Equal(0, statistics.ThreadTotalLiveCount);
        Assert.True(statistics.CreatedInScopeCount > 0);
    }

    [Fact]
    public void BadInputsAreRefusedWithTheReason()
    {
        using var scope = NewDisposeScope();
        var encoder = miniLm.Encoder;
        var ids = tensor(new long[] { 101, 30_522, 102 }, [1, 3]);
        var mask = ones(1, 3, ScalarType.Int64);
        Assert.Contains("30522", Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Forward(ids, mask)).Message);
        Assert.Contains("int64", Assert.Throws<ArgumentException>(() => encoder.Forward(ids.to(ScalarType.Int32), mask)).Message);
        Assert.Contains("512 positions", Assert.Throws<ArgumentException>(() => encoder.Forward(zeros(1, 513, ScalarType.Int64), ones(1, 513))).Message);
        Assert.Contains("attention mask", Assert.Throws<ArgumentException>(() => encoder.Forward(zeros(1, 3, ScalarType.Int64), ones(1, 4))).Message);
    }

    [Fact]
    public void AMissingWeightNamesTheTensorAndTheStage()
    {
        using var scope = NewDisposeScope();
        var names = miniLm.Encoder.Names;
        var tensors = new Dictionary<string, Tensor>(miniLm.Encoder.Parameters);
        tensors.Remove(names.Layers[4].Value);
        var e = Assert.Throws<ArgumentException>(() => BertEncoder.FromTensors(BertConfig.MiniLmL6V2, names, tensors, CPU));
        Assert.Contains($"'{names.Layers[4].Value}' (value)", e.Message);
        Assert.Contains("encoder layer 4", e.Message);
    }

    [Fact]
    public void TheFusedInferencePathEqualsTheOpByOpGraphPaddingIncluded()
    {
        // Without gradients and without a capture a layer takes its fused path; with gradients it runs op by op.
        using var scope = NewDisposeScope();
        var layer = miniLm.Encoder.Layers[3];
        var generator = new Random(11);
        var hidden = tensor(Enumerable.Range(0, 3 * 9 * 384).Select(_ => (float)(generator.NextDouble() * 4 - 2)).ToArray(), [3, 9, 384]);
        // Three sentences of 9, 5 and 1 real tokens; the rest is padding.
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 }, [3, 9]);
        float[] fused;
        using (no_grad()) fused = layer.Forward(hidden, mask).data<float>().ToArray();
        Assert.True(is_grad_enabled());
        var graph = layer.Forward(hidden, mask).detach().data<float>().ToArray();
        double difference = MaxAbsDifference(graph, fused);
        output.WriteLine($"max |fused - op by op| = {difference:E2}");
        Assert.True(difference < 1e-5, $"max |fused - op by op| = {difference}");
        Assert.Contains(graph, v => v != 0f);
    }
}
