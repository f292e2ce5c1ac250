using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// AdamW (decoupled weight decay, bias-corrected moments, PyTorch's update) over a shard's named weights,
/// keeping pruned weights at exactly +0.0: their gradients and both moments are zeroed at the masked
/// positions before and after each update, and the mask is re-applied to the weight.
/// </summary>
/// <remarks>
/// Written out rather than wrapping torch.optim.AdamW because the moments must be masked too: momentum
/// gathered before a round pruned a position would otherwise go on pushing that weight.
/// </remarks>
public sealed class MaskedAdamW : IDisposable
{
    private readonly Dictionary<string, State> _states = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <param name="parameters">The weights to train, by name; updated in place, never disposed here.</param>
    /// <param name="masks">Optional masks by weight name, bool or numeric, same shape; nonzero (1) = pruned. Copied.</param>
    public MaskedAdamW(
        IReadOnlyDictionary<string, Tensor> parameters,
        IReadOnlyDictionary<string, Tensor>? masks = null,
        double learningRate = 1e-3,
        double beta1 = 0.9,
        double beta2 = 0.999,
        double epsilon = 1e-8,
        double weightDecay = 0.01)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(learningRate >= 0) || !double.IsFinite(learningRate))
        {
            throw new ArgumentOutOfRangeException(nameof(learningRate), $"Learning rate {learningRate} must be a non-negative number.");
        }
        if (!(beta1 >= 0 && beta1 < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(beta1), $"beta1 {beta1} must be in [0, 1).");
        }
        if (!(beta2 >= 0 && beta2 < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(beta2), $"beta2 {beta2} must be in [0, 1).");
        }
        if (!(epsilon >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), $"epsilon {epsilon} must be non-negative.");
        }
        if (!(weightDecay >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(weightDecay), $"Weight decay {weightDecay} must be non-negative.");
        }
        LearningRate = learningRate;
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        WeightDecay = weightDecay;
        // Held for the optimizer's life: TorchSharp may finalize an implicit Scalar while libtorch reads it.
        _beta1 = beta1.ToScalar();
        _oneMinusBeta1 = (1 - beta1).ToScalar();
        _beta2 = beta2.ToScalar();
        _oneMinusBeta2 = (1 - beta2).ToScalar();
        _epsilon = epsilon.ToScalar();

        foreach (var (name, weight) in parameters)
        {
            ArgumentNullException.ThrowIfNull(weight, name);
            if (!weight.is_floating_point())
            {
                throw new ArgumentException($"Weight '{name}' is {weight.dtype}; only floating-point weights train.", nameof(parameters));
            }
            _states.Add(name, new State(weight));
        }
        if (masks is not null)
        {
            foreach (var name in masks.Keys)
            {
                if (!_states.ContainsKey(name))
                {
                    throw new ArgumentException($"A mask is given for '{name}', which is not among the weights.", nameof(masks));
                }
            }
            try
            {
                foreach (var (name, mask) in masks)
                {
                    SetMask(name, mask);
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }
    }

    private readonly Scalar _beta1, _oneMinusBeta1, _beta2, _oneMinusBeta2, _epsilon;

    public double LearningRate { get; set; }

    public double Beta1 { get; }

    public double Beta2 { get; }

    public double Epsilon { get; }

    public double WeightDecay { get; }

    /// <summary>The names of the weights this optimizer steps.</summary>
    public IReadOnlyCollection<string> Names => _states.Keys;

    /// <summary>Updates taken by weight <paramref name="name"/> (weights without a gradient are skipped, as in PyTorch).</summary>
    public long StepsOf(string name) => Get(name).Step;

    /// <summary>
    /// Replaces the mask of weight <paramref name="name"/> (null: none) and applies it at once: the weight,
    /// its gradient and its moments become zero at every pruned position. A new pruning round calls this.
    /// </summary>
    public void SetMask(string name, Tensor? mask)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var state = Get(name);
        Tensor? pruned = null;
        if (mask is not null)
        {
            if (!mask.shape.SequenceEqual(state.Weight.shape))
            {
                throw new ArgumentException(
                    $"The mask of '{name}' has shape [{string.Join(", ", mask.shape)}]; the weight has [{string.Join(", ", state.Weight.shape)}].", nameof(mask));
            }
            using var scope = NewDisposeScope();
            pruned = mask.detach().to(state.Weight.device).ne(0).DetachFromDisposeScope();
        }
        state.Pruned?.Dispose();
        state.Pruned = pruned;
        using (no_grad())
        {
            state.ApplyMask();
        }
    }

    /// <summary>One AdamW update of every weight that has a gradient, then the masks again.</summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var _ = no_grad();
        foreach (var state in _states.Values)
        {
            using var scope = NewDisposeScope();
            var grad = state.Weight.grad;
            if (grad is null)
            {
                continue;
            }
            // Scalars are held in locals to the end of the scope: TorchSharp may finalize an implicit one while libtorch reads it.
            if (state.Pruned is not null)
            {
                grad.masked_fill_(state.Pruned, HeldScalars.Zero);
            }
            state.ExpAvg ??= zeros_like(state.Weight).DetachFromDisposeScope();
            state.ExpAvgSq ??= zeros_like(state.Weight).DetachFromDisposeScope();
            state.Step++;

            var weight = state.Weight;
            using var decay = (1 - LearningRate * WeightDecay).ToScalar();
            var biasCorrection1 = 1 - Math.Pow(Beta1, state.Step);
            var biasCorrection2 = 1 - Math.Pow(Beta2, state.Step);
            using var correction2 = Math.Sqrt(biasCorrection2).ToScalar();
            using var step = (-LearningRate / biasCorrection1).ToScalar();
            weight.mul_(decay);
            state.ExpAvg.mul_(_beta1).add_(grad, alpha: _oneMinusBeta1);
            state.ExpAvgSq.mul_(_beta2).addcmul_(grad, grad, value: _oneMinusBeta2);
            var denominator = state.ExpAvgSq.sqrt().div_(correction2).add_(_epsilon, HeldScalars.One);
            weight.addcdiv_(state.ExpAvg, denominator, value: step);
            state.ApplyMask();
        }
    }

    /// <summary>Zeroes every weight's gradient (kept allocated), ready for the next backward pass.</summary>
    public void ZeroGrad()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        foreach (var state in _states.Values)
        {
            state.Weight.grad?.zero_();
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var state in _states.Values)
        {
            state.Dispose();
        }
        foreach (var scalar in new[] { _beta1, _oneMinusBeta1, _beta2, _oneMinusBeta2, _epsilon })
        {
            scalar.Dispose();
        }
    }

    private State Get(string name) =>
        _states.TryGetValue(name, out var state)
            ? state
            : throw new KeyNotFoundException($"'{name}' is not among the weights of this optimizer.");

    private sealed class State(Tensor weight) : IDisposable
    {
        public Tensor Weight { get; } = weight;

        /// <summary>True at pruned positions.</summary>
        public Tensor? Pruned { get; set; }

        public Tensor? ExpAvg { get; set; }

        public Tensor? ExpAvgSq { get; set; }

        public long Step { get; set; }

        /// <summary>masked_fill writes +0.0; multiplying by a 0/1 mask would leave −0.0 for negative weights.</summary>
        public void ApplyMask()
        {
            if (Pruned is null)
            {
                return;
            }
            using var scope = NewDisposeScope();
            using var zero = 0.0.ToScalar();
            Weight.masked_fill_(Pruned, zero);
            Weight.grad?.masked_fill_(Pruned, zero);
            ExpAvg?.masked_fill_(Pruned, zero);
            ExpAvgSq?.masked_fill_(Pruned, zero);
        }

        public void Dispose()
        {
            Pruned?.Dispose();
            ExpAvg?.Dispose();
            ExpAvgSq?.Dispose();
        }
    }
}
