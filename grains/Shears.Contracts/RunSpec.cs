namespace Shears.Contracts;

/// <summary>What the user asked for: one pruning run, as given on the command line.</summary>
[GenerateSerializer, Immutable]
public sealed record RunSpec
{
    [Id(0)] public required string ModelPath { get; init; }
    [Id(1)] public required string OutputPath { get; init; }
    [Id(2)] public double Sparsity { get; init; }
    [Id(3)] public string Method { get; init; } = RunOptions.Methods.Magnitude;
    [Id(4)] public string Pattern { get; init; } = RunOptions.Patterns.Unstructured;
    [Id(5)] public string Scope { get; init; } = RunOptions.Scopes.Global;
    [Id(6)] public string Schedule { get; init; } = RunOptions.Schedules.OneShot;
    [Id(7)] public int Rounds { get; init; } = 1;
    [Id(8)] public int FinetuneSteps { get; init; }
    [Id(9)] public string? EvalData { get; init; }
    [Id(10)] public IReadOnlyList<string> Include { get; init; } = [];
    [Id(11)] public IReadOnlyList<string> Exclude { get; init; } = [];
    [Id(12)] public long Seed { get; init; }
    [Id(13)] public bool Force { get; init; }
    /// <summary>Largest number of elements one shard grain holds; larger tensors are split into row blocks.</summary>
    [Id(14)] public long ShardElements { get; init; } = RunOptions.DefaultShardElements;
    /// <summary>Ln norm for rows/columns patterns: 1, 2 or +∞.</summary>
    [Id(15)] public double Norm { get; init; } = 1;
    /// <summary>Head score for the heads pattern: q (L1 of q_proj rows) or qkvo.</summary>
    [Id(16)] public string HeadScore { get; init; } = RunOptions.HeadScores.Query;
    /// <summary>Spread α of progressive per-layer allocation.</summary>
    [Id(17)] public double ProgressiveSpread { get; init; } = 0.5;
    /// <summary>Tokens per evaluation sequence (the last sequence of a file may be shorter).</summary>
    [Id(18)] public int EvalSeqLen { get; init; } = 128;
    [Id(19)] public string? FinetuneData { get; init; }
    [Id(20)] public double LearningRate { get; init; } = 1e-4;
    [Id(21)] public int Batch { get; init; } = 4;
    [Id(22)] public string? Calibration { get; init; }
    [Id(23)] public int CalibrationSamples { get; init; } = 128;
    /// <summary>The quantization scheme of the run's last phase (W8A16, W4A16, W4A16_ASYM, W8A8), or null: none.</summary>
    [Id(24)] public string? Quantize { get; init; }
    /// <summary>Input columns per scale of the grouped schemes.</summary>
    [Id(25)] public int GroupSize { get; init; } = 128;
    /// <summary>rtn (round to nearest) or gptq.</summary>
    [Id(26)] public string QuantMethod { get; init; } = RunOptions.QuantMethods.Rtn;
    /// <summary>GPTQ: columns in order of decreasing Hessian diagonal.</summary>
    [Id(27)] public bool ActOrder { get; init; }
    /// <summary>OWL: a Wanda score is an outlier above this many times its layer's mean score.</summary>
    [Id(28)] public double OwlThreshold { get; init; } = 5;
    /// <summary>OWL: each layer's sparsity stays within this distance of the target.</summary>
    [Id(29)] public double OwlLambda { get; init; } = 0.08;
    /// <summary>Fine-tuning's learning rate over each round's steps: constant or cosine (after the warm-up).</summary>
    [Id(30)] public string LrSchedule { get; init; } = RunOptions.LrSchedules.Constant;
    /// <summary>Steps of linear warm-up from 0 at the start of each round's fine-tuning.</summary>
    [Id(31)] public int WarmupSteps { get; init; }
    /// <summary>Passes over the fine-tuning data per round (instead of <see cref="FinetuneSteps"/>); 0: none.</summary>
    [Id(32)] public int Epochs { get; init; }
    /// <summary>The output drops the masked neurons, heads (and layers) physically: a smaller dense model with its config updated.</summary>
    [Id(33)] public bool Remove { get; init; }
    /// <summary>
    /// A benchmark mode: the shards score weights generated from this seed (SyntheticWeights) instead of the checkpoint's
    /// bytes, of which only the shapes are read; nothing is written but the report.
    /// </summary>
    [Id(34)] public long? SyntheticWeights { get; init; }
    /// <summary>
    /// What fine-tuning matches: output (the dense model's sentence embeddings for an encoder, the next tokens for a
    /// decoder) or hidden (that, plus each layer's hidden states matched to the dense model's, computed on the same stages).
    /// </summary>
    [Id(35)] public string Distill { get; init; } = RunOptions.DistillModes.Output;
    /// <summary>--distill hidden: the factor on the hidden-state term of the loss.</summary>
    [Id(36)] public double HiddenWeight { get; init; } = 1;
    /// <summary>Exactly this many shards of nearly equal size (unstructured, no pipeline), instead of <see cref="ShardElements"/>; null: by that limit.</summary>
    [Id(37)] public int? Shards { get; init; }

    /// <summary>Each round ends with fine-tuning (or distillation): a number of steps, or of epochs.</summary>
    public bool Trains => FinetuneSteps > 0 || Epochs > 0;

    /// <summary>Whether the run needs the model as a pipeline of stages (evaluation or fine-tuning).</summary>
    public bool NeedsPipeline => EvalData is not null || Trains || UsesCalibration;

    /// <summary>The run sends the calibration sequences through the model: to prune, to quantize or to count outliers.</summary>
    public bool UsesCalibration => NeedsCalibration || NeedsQuantCalibration || NeedsOutliers || RanksLayers;

    /// <summary>--pattern layers ranks the model's layers by their block influence on the calibration activations.</summary>
    public bool RanksLayers => Pattern == RunOptions.Patterns.Layers;

    /// <summary>OWL allocates per layer from the outliers of the Wanda scores, which need the activations.</summary>
    public bool NeedsOutliers => Scope == RunOptions.Scopes.Owl;

    /// <summary>Wanda and SparseGPT score weights with the activations that reach them.</summary>
    public bool NeedsCalibration => Method is RunOptions.Methods.Wanda or RunOptions.Methods.SparseGpt;

    /// <summary>GPTQ quantizes each layer from the inputs that reach it, as SparseGPT prunes.</summary>
    public bool NeedsQuantCalibration => Quantize is not null && QuantMethod == RunOptions.QuantMethods.Gptq;

    /// <summary>
    /// SparseGPT with GPTQ and nothing trained after the last round: that round prunes and quantizes in one sweep (the
    /// SparseGPT paper's joint mode). With fine-tuning after it, the masks are fixed first and GPTQ runs on the trained weights.
    /// </summary>
    public bool JointQuantization => Method == RunOptions.Methods.SparseGpt && NeedsQuantCalibration && !Trains;

    /// <summary>N of an N:M pattern (pruned per group of M), or 0.</summary>
    public (int N, int M) NmPattern => Pattern.Split(':') is [var n, var m] && int.TryParse(n, out int a) && int.TryParse(m, out int b) ? (a, b) : (0, 0);

    /// <summary>
    /// The same run asked for: every option equal, the include and exclude lists by content (the record's own equality
    /// compares lists by reference, and every spec that crosses the wire is a new copy).
    /// </summary>
    public bool SameAs(RunSpec other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return this with { Include = [], Exclude = [] } == other with { Include = [], Exclude = [] }
               && Include.SequenceEqual(other.Include) && Exclude.SequenceEqual(other.Exclude);
    }
}

/// <summary>The accepted values of the run options, and the checks a run spec must pass before it starts.</summary>
public static class RunOptions
{
    public const long DefaultShardElements = 64L << 20;
    /// <summary>The most shards --shards asks for.</summary>
    public const int MaximumShards = 1 << 16;

    public static class Methods
    {
        public const string Magnitude = "magnitude", Random = "random", Wanda = "wanda", SparseGpt = "sparsegpt";
        public static readonly string[] All = [Magnitude, Random, Wanda, SparseGpt];
    }

    public static class Patterns
    {
        public const string Unstructured = "unstructured", Rows = "rows", Columns = "columns", Heads = "heads", Neurons = "neurons", Layers = "layers";
        public static readonly string[] All = [Unstructured, Rows, Columns, Heads, Neurons, Layers, "2:4", "4:8"];
    }

    public static class Scopes
    {
        public const string Global = "global", Layer = "layer", Progressive = "progressive", Owl = "owl";
        public static readonly string[] All = [Global, Layer, Progressive, Owl];
    }

    public static class Schedules
    {
        public const string OneShot = "oneshot", Linear = "linear", Cubic = "cubic";
        public static readonly string[] All = [OneShot, Linear, Cubic];
    }

    public static class QuantSchemes
    {
        public const string W8A16 = "W8A16", W4A16 = "W4A16", W4A16Asym = "W4A16_ASYM", W8A8 = "W8A8";
        public static readonly string[] All = [W8A16, W4A16, W4A16Asym, W8A8];
    }

    public static class LrSchedules
    {
        public const string Constant = "constant", Cosine = "cosine";
        public static readonly string[] All = [Constant, Cosine];
    }

    public static class DistillModes
    {
        public const string Output = "output", Hidden = "hidden";
        public static readonly string[] All = [Output, Hidden];
    }

    public static class QuantMethods
    {
        public const string Rtn = "rtn", Gptq = "gptq";
        public static readonly string[] All = [Rtn, Gptq];
    }

    public static class HeadScores
    {
        public const string Query = "q", Qkvo = "qkvo";
        public static readonly string[] All = [Query, Qkvo];
    }

    /// <summary>Returns the problems with a spec, each naming the option at fault; empty when it can run.</summary>
    public static IReadOnlyList<string> Validate(RunSpec spec)
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(spec.ModelPath)) errors.Add("--model is required");
        if (string.IsNullOrWhiteSpace(spec.OutputPath)) errors.Add("--out is required");
        if (double.IsNaN(spec.Sparsity) || spec.Sparsity < 0 || spec.Sparsity > 1)
            errors.Add($"--sparsity must lie in [0, 1], got {spec.Sparsity}");
        Check(errors, "--method", spec.Method, Methods.All);
        Check(errors, "--pattern", spec.Pattern, Patterns.All);
        Check(errors, "--scope", spec.Scope, Scopes.All);
        Check(errors, "--schedule", spec.Schedule, Schedules.All);
        Check(errors, "--head-score", spec.HeadScore, HeadScores.All);
        if (spec.Rounds < 1) errors.Add($"--rounds must be at least 1, got {spec.Rounds}");
        if (spec.Schedule == Schedules.OneShot && spec.Rounds != 1)
            errors.Add($"--schedule oneshot runs exactly one round; use --schedule linear or cubic for --rounds {spec.Rounds}");
        if (spec.FinetuneSteps < 0) errors.Add($"--finetune-steps must not be negative, got {spec.FinetuneSteps}");
        if (spec.ShardElements < 1) errors.Add($"--shard-elements must be positive, got {spec.ShardElements}");
        if (spec.Shards is { } shards)
        {
            if (shards < 1 || shards > MaximumShards) errors.Add($"--shards must lie in [1, {MaximumShards}], got {shards}");
            if (spec.ShardElements != DefaultShardElements) errors.Add("give --shards or --shard-elements, not both");
            if (spec.Pattern != Patterns.Unstructured)
                errors.Add($"--shards cuts tensors into row blocks, which --pattern {spec.Pattern} keeps whole: use --shard-elements");
            else if (spec.NeedsPipeline)
                errors.Add("--shards: a run that evaluates, fine-tunes or calibrates holds one shard per model stage; leave --shards out");
        }
        if (spec.Norm is not (1 or 2) && !double.IsPositiveInfinity(spec.Norm))
            errors.Add($"--norm must be 1, 2 or inf, got {spec.Norm}");
        if (spec.ProgressiveSpread < 0 || spec.ProgressiveSpread > 1 || double.IsNaN(spec.ProgressiveSpread))
            errors.Add($"--progressive-spread must lie in [0, 1], got {spec.ProgressiveSpread}");

        if (spec.NeedsCalibration)
        {
            if (string.IsNullOrWhiteSpace(spec.Calibration))
                errors.Add($"--method {spec.Method} needs --calibration FILE (a .json array of token-id arrays)");
            if (spec.Scope is not (Scopes.Layer or Scopes.Owl))
                errors.Add($"--method {spec.Method} prunes each weight matrix on its own (as the paper does): use --scope layer or owl");
            if (spec.Pattern is not (Patterns.Unstructured or "2:4" or "4:8"))
                errors.Add($"--method {spec.Method} works with --pattern unstructured, 2:4 or 4:8, got {spec.Pattern}");
        }
        else if (spec.Calibration is not null && !spec.NeedsQuantCalibration && !spec.NeedsOutliers && !spec.RanksLayers)
            errors.Add($"--calibration is used by --method wanda or sparsegpt, --pattern layers, --scope owl or --quant-method gptq, not --method {spec.Method}");
        if (spec.RanksLayers)
        {
            if (string.IsNullOrWhiteSpace(spec.Calibration))
                errors.Add("--pattern layers needs --calibration FILE (layers are ranked by how much they change the activations that reach them)");
            if (spec.Method != Methods.Magnitude)
                errors.Add($"--pattern layers ranks whole layers by block influence; --method {spec.Method} does not apply (leave the default)");
            if (spec.Scope != Scopes.Global)
                errors.Add($"--pattern layers ranks the model's layers against each other: use --scope global (the default), not {spec.Scope}");
        }
        if (spec.NeedsOutliers)
        {
            if (string.IsNullOrWhiteSpace(spec.Calibration))
                errors.Add("--scope owl needs --calibration FILE (the layers' outliers are counted on the activations that reach them)");
            if (spec.Method is not (Methods.Magnitude or Methods.Wanda or Methods.SparseGpt))
                errors.Add($"--scope owl works with --method magnitude, wanda or sparsegpt, got {spec.Method}");
            if (spec.Pattern != Patterns.Unstructured)
                errors.Add($"--scope owl gives each layer its own sparsity: use --pattern unstructured, got {spec.Pattern}");
            if (!(spec.OwlThreshold > 0) || double.IsInfinity(spec.OwlThreshold))
                errors.Add($"--owl-threshold must be a positive number, got {spec.OwlThreshold}");
            if (!(spec.OwlLambda >= 0 && spec.OwlLambda <= 0.5))
                errors.Add($"--owl-lambda must lie in [0, 0.5], got {spec.OwlLambda}");
        }
        else
        {
            if (spec.OwlThreshold != 5) errors.Add("--owl-threshold needs --scope owl");
            if (spec.OwlLambda != 0.08) errors.Add("--owl-lambda needs --scope owl");
        }
        if (spec.Quantize is { } scheme)
        {
            Check(errors, "--quantize", scheme, QuantSchemes.All);
            Check(errors, "--quant-method", spec.QuantMethod, QuantMethods.All);
            if (spec.GroupSize < 1) errors.Add($"--group-size must be positive, got {spec.GroupSize}");
            if (spec.NeedsQuantCalibration && string.IsNullOrWhiteSpace(spec.Calibration))
                errors.Add("--quant-method gptq needs --calibration FILE (the inputs that reach each layer)");
            if (spec.ActOrder && spec.QuantMethod != QuantMethods.Gptq) errors.Add("--act-order orders GPTQ's columns: use it with --quant-method gptq");
            // SparseGPT's joint sweep prunes and quantizes in column order (its N:M groups and lazy blocks are of consecutive columns).
            if (spec.ActOrder && spec.JointQuantization)
                errors.Add("--act-order: with --method sparsegpt and no fine-tuning the last round prunes and quantizes in one sweep, in column order; " +
                           "leave out --act-order, or fine-tune (--finetune-steps) so that the masks are fixed first and GPTQ then visits the columns by activation order");
            if (scheme is QuantSchemes.W8A16 or QuantSchemes.W8A8 && spec.GroupSize != 128)
                errors.Add($"--group-size: {scheme} has one scale per output channel, no groups; --group-size is for W4A16 and W4A16_ASYM");
        }
        else
        {
            if (spec.QuantMethod != QuantMethods.Rtn) errors.Add($"--quant-method {spec.QuantMethod} needs --quantize SCHEME");
            if (spec.ActOrder) errors.Add("--act-order needs --quantize SCHEME --quant-method gptq");
            if (spec.GroupSize != 128) errors.Add("--group-size needs --quantize W4A16 or W4A16_ASYM");
        }
        if (spec.CalibrationSamples < 1) errors.Add($"--calibration-samples must be at least 1, got {spec.CalibrationSamples}");
        if (spec.NmPattern is (int n, int m) && m > 0)
        {
            if (spec.Scope != Scopes.Layer) errors.Add($"--pattern {spec.Pattern} masks {n} of every {m} weights in each row: use --scope layer");
            if (Math.Abs(spec.Sparsity - (double)n / m) > 1e-12) errors.Add($"--pattern {spec.Pattern} means --sparsity {(double)n / m}, got {spec.Sparsity}");
            if (spec.Schedule != Schedules.OneShot) errors.Add($"--pattern {spec.Pattern} is applied in one round: use --schedule oneshot");
        }
        if (spec.Trains && string.IsNullOrWhiteSpace(spec.FinetuneData))
            errors.Add($"{(spec.FinetuneSteps > 0 ? "--finetune-steps" : "--epochs")} needs --finetune-data FILE (a .json array of token-id arrays)");
        if (spec.FinetuneData is not null && !spec.Trains)
            errors.Add("--finetune-data is given but --finetune-steps is 0 (and no --epochs)");
        if (spec.Epochs < 0) errors.Add($"--epochs must not be negative, got {spec.Epochs}");
        if (spec.Epochs > 0 && spec.FinetuneSteps > 0)
            errors.Add("--epochs and --finetune-steps both set each round's steps: give one of them");
        Check(errors, "--lr-schedule", spec.LrSchedule, LrSchedules.All);
        if (spec.WarmupSteps < 0) errors.Add($"--warmup-steps must not be negative, got {spec.WarmupSteps}");
        if (!spec.Trains && spec.WarmupSteps > 0) errors.Add("--warmup-steps needs --finetune-steps or --epochs");
        if (!spec.Trains && spec.LrSchedule != LrSchedules.Constant) errors.Add($"--lr-schedule {spec.LrSchedule} needs --finetune-steps or --epochs");
        Check(errors, "--distill", spec.Distill, DistillModes.All);
        if (!spec.Trains && spec.Distill != DistillModes.Output) errors.Add($"--distill {spec.Distill} needs --finetune-steps or --epochs");
        if (!(spec.HiddenWeight > 0) || double.IsInfinity(spec.HiddenWeight)) errors.Add($"--hidden-weight must be a positive number, got {spec.HiddenWeight}");
        else if (spec.HiddenWeight != 1 && spec.Distill != DistillModes.Hidden) errors.Add("--hidden-weight weighs the term of --distill hidden: use it with --distill hidden");
        if (spec.EvalSeqLen < 2) errors.Add($"--eval-seq-len must be at least 2, got {spec.EvalSeqLen}");
        if (spec.Batch < 1) errors.Add($"--batch must be at least 1, got {spec.Batch}");
        if (!(spec.LearningRate > 0) || double.IsInfinity(spec.LearningRate)) errors.Add($"--lr must be a positive number, got {spec.LearningRate}");

        bool structured = spec.Pattern is Patterns.Rows or Patterns.Columns;
        if (structured && spec.Scope != Scopes.Layer)
            errors.Add($"--pattern {spec.Pattern} ranks rows or columns within each tensor: use --scope layer (norms of different tensors are not comparable)");
        if (spec.Pattern is Patterns.Heads or Patterns.Neurons && spec.Scope == Scopes.Progressive)
            errors.Add($"--pattern {spec.Pattern} works with --scope layer or global, not progressive");
        if (spec.Scope == Scopes.Progressive && spec.Method != Methods.Magnitude)
            errors.Add("--scope progressive ranks layers by weight magnitude: use it with --method magnitude");
        if (spec.Remove)
        {
            if (spec.Pattern is not (Patterns.Neurons or Patterns.Heads or Patterns.Layers))
                errors.Add($"--remove drops whole MLP neurons, attention heads or layers: use it with --pattern neurons, heads or layers, got {spec.Pattern}");
            // GPTQ's Hessian pass runs on the full-width tensors; round to nearest quantizes the removed matrices.
            if (spec.Quantize is not null && spec.QuantMethod == QuantMethods.Gptq)
                errors.Add("--remove with --quant-method gptq is not supported: GPTQ's calibrated pass runs on the full-width tensors; use --quant-method rtn, or remove first and quantize the smaller model with GPTQ in a second run");
            if (spec.Sparsity >= 1)
                errors.Add("--remove with --sparsity 1 would remove every neuron, head or layer: use a smaller --sparsity");
        }
        if (spec.Method == Methods.Random && spec.Pattern != Patterns.Unstructured)
            errors.Add($"--method random works with --pattern unstructured only, got {spec.Pattern}");
        if (spec.SyntheticWeights is not null)
        {
            // Generated weights exist only as scores: nothing reads them as a model, trains them or writes them.
            if (spec.Method != Methods.Magnitude || spec.Pattern != Patterns.Unstructured || spec.Scope is not (Scopes.Global or Scopes.Layer))
                errors.Add($"--synthetic-weights works with --method magnitude, --pattern unstructured and --scope global or layer, got {spec.Method}, {spec.Pattern}, {spec.Scope}");
            if (spec.EvalData is not null || spec.Trains || spec.Calibration is not null || spec.Quantize is not null || spec.Remove)
                errors.Add("--synthetic-weights has no model to evaluate, fine-tune, calibrate, quantize or cut: leave out --eval, --finetune-*, --epochs, --calibration, --quantize and --remove");
        }
        return errors;
    }

    private static void Check(List<string> errors, string option, string value, string[] allowed)
    {
        if (!allowed.Contains(value, StringComparer.Ordinal))
            errors.Add($"{option} must be one of {string.Join(", ", allowed)}, got '{value}'");
    }
}
