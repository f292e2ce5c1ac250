using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Shears.Pruning.Checkpoints;

namespace Shears.TinyLm;

internal sealed record PruneRun(string Name, string Method, string Pattern, int FinetuneSteps, double Sparsity = 0.5);

internal sealed record PruneResult(
    PruneRun Run,
    string Command,
    double WallSeconds,
    double? ReportSeconds,
    double Baseline,
    double Pruned,
    long EvalTokens,
    double? FinetuneLoss,
    double AchievedSparsity,
    long MaskedWeights,
    long PrunableWeights,
    long ZeroWeights,
    long NmViolations,
    long? ZerosLostToFinetune,
    int Attempts = 1,
    string? Error = null)
{
    public static PruneResult Failed(PruneRun run, string error, int attempts) =>
        new(run, "", 0, null, double.NaN, double.NaN, 0, null, double.NaN, 0, 0, 0, 0, null, attempts, error);
}

/// <summary>
/// Runs the shears CLI once per (method, pattern, fine-tuning) as a subprocess with an embedded silo,
/// reads each shears-report.json, and checks the output checkpoint's zeros.
/// </summary>
internal static class PruneTable
{
    public static IReadOnlyList<PruneRun> Runs(int finetuneSteps)
    {
        var runs = new List<PruneRun>();
        if (finetuneSteps > 0)
        {
            // Control: the same fine-tuning on the dense model (nothing masked), to tell recovery from further training.
            runs.Add(new PruneRun("dense-ft", "magnitude", "unstructured", finetuneSteps, Sparsity: 0.0));
        }
        foreach (var pattern in new[] { "unstructured", "2:4" })
        {
            foreach (var method in new[] { "magnitude", "wanda", "sparsegpt" })
            {
                var name = $"{method}-{(pattern == "2:4" ? "2of4" : pattern)}";
                runs.Add(new PruneRun(name, method, pattern, 0));
                if (finetuneSteps > 0)
                {
                    runs.Add(new PruneRun(name + "-ft", method, pattern, finetuneSteps));
                }
            }
        }
        return runs;
    }

    public static PruneResult Execute(PruneRun run, string shears, string modelDir, string tokensDir, string runsDir,
        double finetuneLr, int finetuneBatch, int calibrationSamples, int threads)
    {
        var outDir = Path.Combine(runsDir, run.Name);
        var args = new List<string>
        {
            "run", "--model", modelDir, "--out", outDir, "--force",
            "--sparsity", run.Sparsity.ToString("R", System.Globalization.CultureInfo.InvariantCulture), "--scope", "layer", "--method", run.Method, "--pattern", run.Pattern,
            "--eval", Path.Combine(tokensDir, "eval.json"),
        };
        if (run.Method is "wanda" or "sparsegpt")
        {
            args.AddRange(["--calibration", Path.Combine(tokensDir, "calibration.json"), "--calibration-samples", calibrationSamples.ToString()]);
        }
        if (run.FinetuneSteps > 0)
        {
            args.AddRange(["--finetune-steps", run.FinetuneSteps.ToString(), "--finetune-data", Path.Combine(tokensDir, "finetune.json"),
                "--lr", finetuneLr.ToString("R", System.Globalization.CultureInfo.InvariantCulture), "--batch", finetuneBatch.ToString()]);
        }
        var command = $"OMP_NUM_THREADS={threads} DOTNET_GCgen0size=0x40000000 shears " + string.Join(' ', args.Select(a => Rel(a)));
        Console.WriteLine($"table: {command}");

        var start = new ProcessStartInfo(shears) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // libtorch's intra-op threads: on 2 cores shared with other work, one thread runs far faster than two contending ones.
        start.Environment["OMP_NUM_THREADS"] = threads.ToString();
        // Fewer garbage collections (1 GiB gen0 budget): makes the intermittent libtorch Scalar failure rarer (see TinyLm.md).
        start.Environment["DOTNET_GCgen0size"] = "0x40000000";
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        Directory.CreateDirectory(runsDir);
        var logPath = Path.Combine(runsDir, run.Name + ".log");
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start '{shears}'.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        var wall = clock.Elapsed.TotalSeconds;
        File.WriteAllText(logPath, stdout.Result + "\n--- stderr ---\n" + stderr.Result);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"'{command}' exited with {process.ExitCode}; see {logPath}:\n{Tail(stdout.Result + stderr.Result)}");
        }

        using var report = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(outDir, "shears-report.json")));
        var root = report.RootElement;
        var baseline = root.GetProperty("baseline").GetProperty("eval");
        var rounds = root.GetProperty("rounds");
        var last = rounds[rounds.GetArrayLength() - 1];
        var eval = last.GetProperty("eval");
        double? ftLoss = last.TryGetProperty("finetuneLoss", out var fl) && fl.ValueKind == JsonValueKind.Number ? fl.GetDouble() : null;
        double? reportSeconds = root.TryGetProperty("seconds", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : null;
        var masked = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var t in root.GetProperty("tensors").EnumerateArray())
        {
            masked[t.GetProperty("name").GetString()!] = t.GetProperty("maskedWeights").GetInt64();
        }

        var (zeros, violations, lost) = CheckZeros(outDir, masked, run, runsDir);
        var result = new PruneResult(run, command, wall, reportSeconds,
            baseline.GetProperty("value").GetDouble(), eval.GetProperty("value").GetDouble(), eval.GetProperty("tokens").GetInt64(), ftLoss,
            last.GetProperty("achievedSparsity").GetDouble(), masked.Values.Sum(), root.GetProperty("prunableWeights").GetInt64(),
            zeros, violations, lost);
        Console.WriteLine($"table: {run.Name}: dense {result.Baseline:0.0000} → {result.Pruned:0.0000} per byte; " +
                          $"sparsity {result.AchievedSparsity:0.0000}; {wall:0.0}s");
        return result;
    }

    /// <summary>
    /// In the output checkpoint: zeros in the pruned tensors (at least the masked count), groups of 4
    /// along each row with fewer than 2 zeros (2:4 runs), and — for a fine-tuned run — weights that are
    /// zero in the same run without fine-tuning but not after it (masks are deterministic, so 0 expected).
    /// </summary>
    private static (long Zeros, long NmViolations, long? Lost) CheckZeros(string outDir, IReadOnlyDictionary<string, long> masked, PruneRun run, string runsDir)
    {
        var manifest = CheckpointReader.ReadManifest(outDir);
        CheckpointManifest? before = null;
        if (run.FinetuneSteps > 0)
        {
            var plainDir = Path.Combine(runsDir, run.Name[..^"-ft".Length]);
            if (File.Exists(Path.Combine(plainDir, "shears-report.json")))
            {
                before = CheckpointReader.ReadManifest(plainDir);
            }
        }
        long zeros = 0, violations = 0, lost = 0;
        foreach (var (name, count) in masked)
        {
            var entry = manifest.Get(name);
            var values = Floats(manifest, entry);
            long z = values.Count(v => v == 0f);
            if (z < count)
            {
                throw new InvalidOperationException($"{run.Name}: '{name}' holds {z} zeros but the report masks {count}.");
            }
            zeros += z;
            if (run.Pattern == "2:4")
            {
                var cols = (int)entry.Shape[^1];
                for (var row = 0; row < values.Length / cols; row++)
                {
                    for (var g = 0; g + 4 <= cols; g += 4)
                    {
                        var groupZeros = 0;
                        for (var k = 0; k < 4; k++)
                        {
                            groupZeros += values[row * cols + g + k] == 0f ? 1 : 0;
                        }
                        violations += groupZeros < 2 ? 1 : 0;
                    }
                }
            }
            if (before is not null)
            {
                var old = Floats(before, before.Get(name));
                for (var i = 0; i < old.Length; i++)
                {
                    lost += old[i] == 0f && values[i] != 0f ? 1 : 0;
                }
            }
        }
        return (zeros, violations, before is null ? null : lost);
    }

    private static float[] Floats(CheckpointManifest manifest, TensorEntry entry)
    {
        if (entry.DType != TensorDType.F32)
        {
            throw new NotSupportedException($"'{entry.Name}' is {entry.DType}; the tiny model is F32.");
        }
        return MemoryMarshal.Cast<byte, float>(CheckpointReader.ReadTensor(manifest, entry)).ToArray();
    }

    private static string Tail(string text) => text.Length <= 3000 ? text : text[^3000..];

    /// <summary>Paths shown relative to the repository root, as a reader would type them.</summary>
    internal static string Rel(string arg)
    {
        if (!Path.IsPathRooted(arg))
        {
            return arg;
        }
        var root = Program.RepoRoot;
        var rel = Path.GetRelativePath(root, arg);
        return rel.StartsWith("..", StringComparison.Ordinal) ? arg : rel;
    }
}
