namespace Shears.Pruning.Schedules;

public enum LearningRateShape { Constant, Cosine }

/// <summary>
/// The learning rate of each fine-tuning step, as transformers' <c>get_constant_schedule_with_warmup</c> and
/// <c>get_cosine_schedule_with_warmup</c> define it (src/transformers/optimization.py): step t (0-based) of T with W
/// warm-up steps takes lr·t/W while t &lt; W, then lr (constant) or lr·½(1 + cos(π·(t − W)/max(1, T − W))) (cosine,
/// reaching 0 at t = T).
/// </summary>
public static class LearningRateSchedule
{
    public static double At(LearningRateShape shape, double learningRate, int step, int steps, int warmup)
    {
        if (step < 0 || step >= Math.Max(1, steps))
            throw new ArgumentOutOfRangeException(nameof(step), step, $"step {step} is not one of the {steps} steps");
        ArgumentOutOfRangeException.ThrowIfNegative(warmup);
        if (step < warmup) return learningRate * step / warmup;
        if (shape == LearningRateShape.Constant) return learningRate;
        double progress = (double)(step - warmup) / Math.Max(1, steps - warmup);
        return learningRate * Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
