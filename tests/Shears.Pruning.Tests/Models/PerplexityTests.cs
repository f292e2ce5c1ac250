using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Models;

public class PerplexityTests
{
    [Fact]
    public void TwoTokenVocabularyWorkedByHand()
    {
        // Tokens [0, 1, 1]: position 0 gives token 1 probability 3/4 (logits 0 and ln 3), position 1 gives
        // it 1/4 (logits ln 3 and 0). Position 2 predicts nothing, so its extreme logits must not count.
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0, MathF.Log(3), MathF.Log(3), 0, 100, -100 }, [1, 3, 2]);
        var ids = tensor(new long[] { 0, 1, 1 }, [1, 3]);

        var (nll, tokens) = Perplexity.NegativeLogLikelihood(logits, ids);

        Assert.Equal(2, tokens);
        Assert.Equal(-Math.Log(0.75) - Math.Log(0.25), nll, 1e-6);
        Assert.Equal(4 / Math.Sqrt(3), Math.Exp(nll / tokens), 1e-6); // exp(ln(16/3) / 2)
        Assert.Equal(nll / tokens, Perplexity.Loss(logits, ids).item<float>(), 1e-6);
    }

    /// <summary>
    /// The training loss over right-padded rows is the mean over the rows' own predictions, and its gradient is the one
    /// of the rows taken one by one: padding neither counts nor trains.
    /// </summary>
    [Fact]
    public void LossWithLengthsIgnoresPaddingInValueAndGradient()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var logits = randn(2, 5, 7).requires_grad_(true);
        var ids = randint(0, 7, [2, 5], ScalarType.Int64);
        var loss = Perplexity.Loss(logits, ids, [5, 3]);
        loss.backward();

        var alone = randn(2, 5, 7);
        alone.copy_(logits.detach());
        alone.requires_grad_(true);
        var (first, _) = Perplexity.NegativeLogLikelihood(alone.detach().narrow(0, 0, 1), ids.narrow(0, 0, 1));
        var (second, _) = Perplexity.NegativeLogLikelihood(alone.detach().narrow(0, 1, 1).narrow(1, 0, 3), ids.narrow(0, 1, 1).narrow(1, 0, 3));
        Assert.Equal((first + second) / 6, loss.item<float>(), 1e-5);

        // The same total from the two rows' own losses, weighted by their predictions: the same gradient.
        var rowLosses = Perplexity.Loss(alone.narrow(0, 0, 1), ids.narrow(0, 0, 1)) * 4 + Perplexity.Loss(alone.narrow(0, 1, 1).narrow(1, 0, 3), ids.narrow(0, 1, 1).narrow(1, 0, 3)) * 2;
        (rowLosses / 6).backward();
        Assert.True(logits.grad!.allclose(alone.grad!, rtol: 1e-5, atol: 1e-7));
        // Padding got no gradient: the second row's positions 2–4 predict nothing inside its sequence of 3.
        Assert.Equal(0f, logits.grad!.narrow(0, 1, 1).narrow(1, 2, 3).abs().sum().item<float>());

        Assert.Throws<ArgumentException>(() => Perplexity.Loss(logits, ids, [1, 1]));
        Assert.Throws<ArgumentException>(() => Perplexity.Loss(logits, ids, [5]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Perplexity.Loss(logits, ids, [6, 3]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Perplexity.Loss(logits, ids, [5, -1]));

        // A padded position whose logits are all −Inf (its per-token loss NaN) stays out of the loss: masked, not
        // multiplied by zero.
        var extreme = logits.detach().clone();
        extreme[1, 3].fill_(float.NegativeInfinity);
        Assert.True(float.IsFinite(Perplexity.Loss(extreme, ids, [5, 3]).item<float>()));
    }

    [Fact]
    public void LengthsCountOnlyPredictionsInsideEachSequence()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var logits = randn(2, 5, 7);
        var ids = randint(0, 7, [2, 5], ScalarType.Int64);

        var (padded, paddedTokens) = Perplexity.NegativeLogLikelihood(logits, ids, [5, 3]);
        var (first, _) = Perplexity.NegativeLogLikelihood(logits.narrow(0, 0, 1), ids.narrow(0, 0, 1));
        var (second, _) = Perplexity.NegativeLogLikelihood(logits.narrow(0, 1, 1).narrow(1, 0, 3), ids.narrow(0, 1, 1).narrow(1, 0, 3));

        Assert.Equal(4 + 2, paddedTokens);
        Assert.Equal(first + second, padded, 1e-9);
    }

    [Fact]
    public void EvaluateIsPerSequenceNllWhateverTheBatching()
    {
        var config = RandomLlama.Config(vocab: 32);
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 21));
        try
        {
            using var model = LlamaModel.FromTensors(config, tensors, CPU);
            var random = new Random(4);
            var sequences = new[] { 9, 4, 2, 7, 5 }
                .Select(n => Enumerable.Range(0, n).Select(_ => (long)random.Next(32)).ToArray()).ToArray();

            double nll = 0;
            using (var scope = NewDisposeScope())
            {
                foreach (var s in sequences)
                {
                    var ids = tensor(s, [1, s.Length]);
                    nll += Perplexity.NegativeLogLikelihood(model.Forward(ids), ids).NllSum;
                }
            }
            var expected = Math.Exp(nll / (8 + 3 + 1 + 6 + 4));

            foreach (var batchSize in new[] { 1, 2, 5, 64 })
            {
                var result = Perplexity.Evaluate(model, sequences, batchSize, CPU);
                Assert.Equal("perplexity", result.Metric);
                Assert.Equal(22, result.Tokens);
                Assert.Equal(expected, result.Value, expected * 1e-6);
            }
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void EvaluateLeavesNoTensorBehind()
    {
        var config = RandomLlama.Config(vocab: 32);
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 21));
        try
        {
            using var model = LlamaModel.FromTensors(config, tensors, CPU);
            var sequences = new[] { new long[] { 1, 2, 3, 4 }, [5, 6], [7, 8, 9] };

            var statistics = DisposeScopeManager.Statistics;
            statistics.Reset();
            Perplexity.Evaluate(model, sequences, 2, CPU);

            Assert.Equal(0, statistics.ThreadTotalLiveCount);
            Assert.True(statistics.CreatedInScopeCount > 0, "the evaluation ran tensor work in dispose scopes");
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }

    [Fact]
    public void EvaluateRefusesTokensOutsideTheVocabulary()
    {
        var config = RandomLlama.Config(vocab: 32);
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 21));
        try
        {
            using var model = LlamaModel.FromTensors(config, tensors, CPU);
            var e = Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(model, [[1, 2], [3, 32]], 2, CPU));
            Assert.Contains("Sequence 1", e.Message);
            Assert.Contains("32", e.Message);
            Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(model, [[1]], 2, CPU));
            Assert.Throws<ArgumentOutOfRangeException>(() => Perplexity.Evaluate(model, [[1, 2]], 0, CPU));
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
        }
    }
}
