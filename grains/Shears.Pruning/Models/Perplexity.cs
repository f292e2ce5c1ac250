using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>An evaluation's outcome: the metric's name, its value and the predicted tokens it covers.</summary>
public sealed record EvalResult(string Metric, double Value, long Tokens);

/// <summary>
/// Perplexity of a causal LM: exp(total negative log-likelihood / predicted tokens). A sequence of T
/// tokens gives T−1 predictions (position t predicts token t+1); nothing is prepended.
/// </summary>
public static class Perplexity
{
    public const string MetricName = "perplexity";

    /// <summary>
    /// Evaluates <paramref name="sequences"/> in batches of <paramref name="batchSize"/> consecutive sequences,
    /// each batch right-padded to its longest sequence (causal attention keeps padding out of the real positions).
    /// Runs without gradients; leaves no tensor behind.
    /// </summary>
    public static EvalResult Evaluate(LlamaModel model, IReadOnlyList<long[]> sequences, int batchSize, Device device)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        if (sequences.Count == 0)
        {
            throw new ArgumentException("There are no sequences to evaluate.", nameof(sequences));
        }
        for (var i = 0; i < sequences.Count; i++)
        {
            var sequence = sequences[i] ?? throw new ArgumentException($"Sequence {i} is null.", nameof(sequences));
            if (sequence.Length < 2)
            {
                throw new ArgumentException($"Sequence {i} has {sequence.Length} token(s); a prediction needs at least 2.", nameof(sequences));
            }
            foreach (var id in sequence)
            {
                if (id < 0 || id >= model.Config.VocabSize)
                {
                    throw new ArgumentException(
                        $"Sequence {i} holds token id {id}, outside the model's vocabulary of {model.Config.VocabSize}.", nameof(sequences));
                }
            }
        }

        double nll = 0;
        long tokens = 0;
        using (no_grad())
        {
            for (var start = 0; start < sequences.Count; start += batchSize)
            {
                var count = Math.Min(batchSize, sequences.Count - start);
                var lengths = new int[count];
                for (var b = 0; b < count; b++)
                {
                    lengths[b] = sequences[start + b].Length;
                }
                var length = lengths.Max();
                var ids = new long[count * length]; // right padding with token 0, never predicted nor predicting
                for (var b = 0; b < count; b++)
                {
                    sequences[start + b].CopyTo(ids, b * length);
                }

                using var scope = NewDisposeScope();
                var tokenIds = tensor(ids, [count, length], ScalarType.Int64, device);
                var logits = model.Forward(tokenIds);
                var (batchNll, batchTokens) = NegativeLogLikelihood(logits, tokenIds, lengths);
                nll += batchNll;
                tokens += batchTokens;
            }
        }
        return new EvalResult(MetricName, Math.Exp(nll / tokens), tokens);
    }

    /// <summary>
    /// Summed negative log-likelihood of tokenIds[:, 1:] under logits[:, :−1] (log-softmax in fp32,
    /// summed in fp64) and the number of predictions, B × (T−1).
    /// </summary>
    public static (double NllSum, long Tokens) NegativeLogLikelihood(Tensor logits, Tensor tokenIds) =>
        NegativeLogLikelihood(logits, tokenIds, null);

    /// <summary>
    /// As the two-argument form, counting in row b only the lengths[b] − 1 predictions inside its sequence
    /// (the rest of the row is padding).
    /// </summary>
    public static (double NllSum, long Tokens) NegativeLogLikelihood(Tensor logits, Tensor tokenIds, IReadOnlyList<int>? lengths)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(tokenIds);
        var (batch, length) = CheckShapes(logits, tokenIds);
        if (lengths is not null && lengths.Count != batch)
        {
            throw new ArgumentException($"{lengths.Count} lengths given for a batch of {batch}.", nameof(lengths));
        }
        if (length < 2)
        {
            return (0, 0);
        }

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (perToken, predicted) = PredictionsInside(TokenNll(logits, tokenIds), lengths);
        var sum = perToken.to(ScalarType.Float64).sum().cpu().item<double>();
        return (sum, predicted);
    }

    /// <summary>
    /// Per-prediction values [B, T−1] with those past each row's sequence (lengths[b] − 1 predictions inside row b) set
    /// to 0, and how many predictions lie inside; all of them without <paramref name="lengths"/>.
    /// </summary>
    private static (Tensor Values, long Predicted) PredictionsInside(Tensor perToken, IReadOnlyList<int>? lengths)
    {
        long batch = perToken.shape[0], predictions = perToken.shape[1];
        if (lengths is null) return (perToken, batch * predictions);
        var outside = new bool[batch * predictions];
        long predicted = 0;
        for (var b = 0; b < batch; b++)
        {
            var n = lengths[b];
            if (n < 0 || n > predictions + 1)
            {
                throw new ArgumentOutOfRangeException(nameof(lengths), $"Length {n} of row {b} is outside [0, {predictions + 1}].");
            }
            var inside = Math.Max(0, n - 1);
            Array.Fill(outside, true, (int)(b * predictions + inside), (int)(predictions - inside));
            predicted += inside;
        }
        var mask = tensor(outside, [batch, predictions], ScalarType.Bool, perToken.device);
        return (perToken.masked_fill(mask, HeldScalars.Zero), predicted);
    }

    /// <summary>Mean negative log-likelihood over the B × (T−1) predictions, differentiable: the training loss at the head.</summary>
    public static Tensor Loss(Tensor logits, Tensor tokenIds) => Loss(logits, tokenIds, null);

    /// <summary>
    /// As the two-argument form over right-padded rows: the mean over the lengths[b] − 1 predictions inside each row's
    /// sequence only, so padding is neither predicted nor counted (a batch of sequences of different lengths trains as
    /// the same sequences would one by one).
    /// </summary>
    public static Tensor Loss(Tensor logits, Tensor tokenIds, IReadOnlyList<int>? lengths)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(tokenIds);
        var (batch, length) = CheckShapes(logits, tokenIds);
        if (length < 2)
        {
            throw new ArgumentException("Sequences of one token predict nothing; a loss needs at least 2 tokens.", nameof(tokenIds));
        }
        if (lengths is not null && lengths.Count != batch) throw new ArgumentException($"{lengths.Count} lengths given for a batch of {batch}.", nameof(lengths));
        using var scope = NewDisposeScope();
        if (lengths is null) return TokenNll(logits, tokenIds).mean().MoveToOuterDisposeScope();
        var (perToken, predicted) = PredictionsInside(TokenNll(logits, tokenIds), lengths);
        if (predicted == 0) throw new ArgumentException("No row holds 2 tokens: the batch predicts nothing.", nameof(lengths));
        using var count = ((double)predicted).ToScalar();
        return perToken.sum().div(count).MoveToOuterDisposeScope();
    }

    private static Tensor TokenNll(Tensor logits, Tensor tokenIds)
    {
        var length = logits.shape[1];
        var predictions = logits.narrow(1, 0, length - 1).to(ScalarType.Float32).log_softmax(-1);
        var targets = tokenIds.narrow(1, 1, length - 1).to(predictions.device).unsqueeze(-1);
        return predictions.gather(-1, targets).squeeze(-1).neg();
    }

    private static (long Batch, long Length) CheckShapes(Tensor logits, Tensor tokenIds)
    {
        if (logits.dim() != 3 || tokenIds.dim() != 2 || logits.shape[0] != tokenIds.shape[0] || logits.shape[1] != tokenIds.shape[1])
        {
            throw new ArgumentException(
                $"Logits must be [batch, length, vocab] and token ids [batch, length]; got [{string.Join(", ", logits.shape)}] and [{string.Join(", ", tokenIds.shape)}].");
        }
        if (tokenIds.dtype != ScalarType.Int64)
        {
            throw new ArgumentException($"Token ids must be int64, not {tokenIds.dtype}.", nameof(tokenIds));
        }
        return (tokenIds.shape[0], tokenIds.shape[1]);
    }
}
