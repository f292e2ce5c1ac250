namespace Shears.Engine;

public enum ScoreMethod { Magnitude, Random, Wanda, SparseGpt }

public enum PrunePattern { Unstructured, Rows, Columns, Heads, Neurons, Layers, NOfM }

public enum SelectionScope { Global, Layer, Progressive, Owl }

/// <summary>
/// What a run asks of its rounds, typed: parsed once from the option strings of a run spec so that round
/// classes and shards switch on values, not on strings.
/// </summary>
public sealed record RunRecipe
{
    public ScoreMethod Method { get; init; } = ScoreMethod.Magnitude;
    public PrunePattern Pattern { get; init; } = PrunePattern.Unstructured;
    public SelectionScope Scope { get; init; } = SelectionScope.Global;
    /// <summary>Ln norm of rows or columns: 1, 2 or +∞.</summary>
    public double Norm { get; init; } = 1;
    public Shears.Pruning.Heads.HeadScore HeadScore { get; init; } = Shears.Pruning.Heads.HeadScore.QueryL1;
    /// <summary>N and M of an N:M pattern (N pruned in every M); (0, 0) otherwise.</summary>
    public (int N, int M) NOfM { get; init; }
    public long Seed { get; init; }
    public double Sparsity { get; init; }
    /// <summary>
    /// Heads per layer with grouped-query attention, for a model whose heads are removed: each key/value group loses
    /// round_half_to_even(s × its query heads), the lowest-scoring of the group, so every group keeps as many.
    /// </summary>
    public bool BalancedHeadGroups { get; init; }
    /// <summary>The shards score weights generated from this seed (Shears.Pruning.Scoring.SyntheticWeights), not the file's bytes.</summary>
    public long? SyntheticWeightsSeed { get; init; }

    /// <summary>Wanda and SparseGPT score weights with the activations that reach them.</summary>
    public bool Calibrated => Method is ScoreMethod.Wanda or ScoreMethod.SparseGpt;

    /// <summary>Elements are selected one by one by a score (unstructured magnitude or random).</summary>
    public bool ScoresElements => Pattern == PrunePattern.Unstructured && Method is ScoreMethod.Magnitude or ScoreMethod.Random;

    /// <summary>Reads the option strings as the command line spells them (--method, --pattern, --scope, --head-score).</summary>
    public static RunRecipe Parse(string method, string pattern, string scope, double norm, string headScore, long seed, double sparsity)
    {
        var nOfM = pattern.Split(':') is [var n, var m] && int.TryParse(n, out int a) && int.TryParse(m, out int b) ? (a, b) : (0, 0);
        return new RunRecipe
        {
            Method = method switch
            {
                "magnitude" => ScoreMethod.Magnitude, "random" => ScoreMethod.Random, "wanda" => ScoreMethod.Wanda, "sparsegpt" => ScoreMethod.SparseGpt,
                _ => throw new ArgumentException($"--method '{method}' is not one of magnitude, random, wanda, sparsegpt", nameof(method)),
            },
            Pattern = pattern switch
            {
                "unstructured" => PrunePattern.Unstructured, "rows" => PrunePattern.Rows, "columns" => PrunePattern.Columns, "heads" => PrunePattern.Heads,
                "neurons" => PrunePattern.Neurons, "layers" => PrunePattern.Layers,
                _ when nOfM.Item2 > 0 => PrunePattern.NOfM,
                _ => throw new ArgumentException($"--pattern '{pattern}' is not one of unstructured, rows, columns, heads, neurons, layers, N:M", nameof(pattern)),
            },
            Scope = scope switch
            {
                "global" => SelectionScope.Global, "layer" => SelectionScope.Layer, "progressive" => SelectionScope.Progressive, "owl" => SelectionScope.Owl,
                _ => throw new ArgumentException($"--scope '{scope}' is not one of global, layer, progressive, owl", nameof(scope)),
            },
            Norm = norm,
            HeadScore = headScore switch
            {
                "q" => Shears.Pruning.Heads.HeadScore.QueryL1, "qkvo" => Shears.Pruning.Heads.HeadScore.QkvoL1,
                _ => throw new ArgumentException($"--head-score '{headScore}' is not one of q, qkvo", nameof(headScore)),
            },
            NOfM = nOfM,
            Seed = seed,
            Sparsity = sparsity,
        };
    }
}
