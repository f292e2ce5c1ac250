namespace Shears.Pruning.Schedules;

/// <summary>How the target sparsity grows over the rounds.</summary>
public enum ScheduleKind
{
    /// <summary>One round straight to the final sparsity.</summary>
    OneShot,
    /// <summary>Equal steps: s_t = s_i + (s_f − s_i)·t/n.</summary>
    Linear,
    /// <summary>Zhu &amp; Gupta (2017): s_t = s_f + (s_i − s_f)(1 − t/n)³, big steps first.</summary>
    Cubic,
}

/// <summary>Cumulative target sparsities per round, and the conversions to per-round amounts.</summary>
public static class Schedule
{
    /// <summary>
    /// The cumulative target sparsity after each round t = 1..n: never decreasing, the last
    /// exactly <paramref name="finalSparsity"/>. One-shot gives [s_f] and ignores
    /// <paramref name="rounds"/> beyond checking it is at least 1.
    /// </summary>
    public static double[] Targets(ScheduleKind kind, double finalSparsity, int rounds, double initialSparsity = 0)
    {
        if (!(finalSparsity >= 0 && finalSparsity <= 1))
            throw new ArgumentOutOfRangeException(nameof(finalSparsity), finalSparsity, $"--sparsity must be between 0 and 1, got {finalSparsity}");
        if (rounds < 1)
            throw new ArgumentOutOfRangeException(nameof(rounds), rounds, $"--rounds must be at least 1, got {rounds}");
        if (!(initialSparsity >= 0 && initialSparsity <= finalSparsity))
            throw new ArgumentOutOfRangeException(nameof(initialSparsity), initialSparsity,
                $"the initial sparsity must be between 0 and --sparsity ({finalSparsity}), got {initialSparsity}");

        if (kind == ScheduleKind.OneShot) return [finalSparsity];
        var targets = new double[rounds];
        double previous = 0;
        for (int t = 1; t <= rounds; t++)
        {
            double progress = (double)t / rounds;
            double s = kind switch
            {
                ScheduleKind.Linear => initialSparsity + (finalSparsity - initialSparsity) * progress,
                ScheduleKind.Cubic => finalSparsity + (initialSparsity - finalSparsity) * Math.Pow(1 - progress, 3),
                _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown schedule"),
            };
            // Rounding must neither overshoot the final target nor step backwards.
            previous = Math.Max(previous, Math.Min(s, finalSparsity));
            targets[t - 1] = previous;
        }
        targets[^1] = finalSparsity;
        return targets;
    }

    /// <summary>
    /// The fraction of the still-unmasked elements to mask in a round that takes the cumulative
    /// sparsity from <paramref name="previousCumulative"/> to <paramref name="nextCumulative"/>:
    /// (s_next − s_prev) / (1 − s_prev), 0 when everything is already masked. This is PyTorch's
    /// per-call amount in a PruningContainer.
    /// </summary>
    public static double RoundAmount(double previousCumulative, double nextCumulative)
    {
        CheckSparsity(previousCumulative, nameof(previousCumulative));
        CheckSparsity(nextCumulative, nameof(nextCumulative));
        if (nextCumulative < previousCumulative)
            throw new ArgumentOutOfRangeException(nameof(nextCumulative), nextCumulative,
                $"a round cannot lower the sparsity from {previousCumulative}");
        if (previousCumulative == 1) return 0;
        return Math.Min(1, (nextCumulative - previousCumulative) / (1 - previousCumulative));
    }

    /// <summary>The inverse of <see cref="RoundAmount"/>: s_prev + (1 − s_prev) × amount.</summary>
    public static double CumulativeAfter(double previousCumulative, double roundAmount)
    {
        CheckSparsity(previousCumulative, nameof(previousCumulative));
        CheckSparsity(roundAmount, nameof(roundAmount));
        return Math.Min(1, previousCumulative + (1 - previousCumulative) * roundAmount);
    }

    private static void CheckSparsity(double value, string name)
    {
        if (!(value >= 0 && value <= 1))
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be between 0 and 1, got {value}");
    }
}
