using System.Text;
using System.Text.Json;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using static TorchSharp.torch;

namespace Shears.PipelineBench;

/// <summary>
/// bench/TinyLm's model shape (a seeded DemoCheckpoint of it, fp32): perplexity evaluation and fine-tuning steps through
/// the stage pipeline against LlamaModel in this process (Perplexity.Evaluate; forward, backward and a MaskedAdamW step).
/// </summary>
public static class TinyLmPipeline
{
    private const int SeqLen = 128, Wanted = 32;

    public static async Task<int> RunAsync(Options o)
    {
        string work = Directory.CreateDirectory(o.Work).FullName;
        string model = Path.Combine(work, "tinylm");
        // bench/TinyLm's TrainOptions: hidden 192, intermediate 512, 4 layers, 4 heads / 2 KV heads, byte vocabulary.
        DemoCheckpoint.Write(model, new DemoCheckpointOptions(HiddenSize: 192, Layers: 4, Heads: 4, KvHeads: 2, IntermediateSize: 512,
            VocabSize: 256, DType: TensorDType.F32, MaxShardBytes: 64_000_000));

        // Byte-level sequences of real English (the KJV column), evaluation and fine-tuning windows apart.
        var bytes = Encoding.UTF8.GetBytes(string.Join('\n', File.ReadLines(o.Data).Skip(1).Select(l => l.Split('\t')).Where(c => c.Length == 3).Select(c => c[1])));
        long[] Window(int i) => bytes.AsSpan(i * SeqLen, SeqLen).ToArray().Select(b => (long)b).ToArray();
        if (bytes.Length < (o.Count + o.Batch * o.Steps) * SeqLen) throw new ArgumentException($"{o.Data} holds {bytes.Length} bytes: too few for the sequences asked");
        var eval = Enumerable.Range(0, o.Count).Select(Window).ToArray();
        var train = Enumerable.Range(o.Count, o.Batch * o.Steps).Select(Window).ToArray();
        string evalFile = Path.Combine(work, "eval.json"), trainFile = Path.Combine(work, "finetune.json");
        File.WriteAllText(evalFile, JsonSerializer.Serialize(eval));
        File.WriteAllText(trainFile, JsonSerializer.Serialize(train));

        int stages = 6; // the embedding, 4 layers and the head (RunPlan's decoder stages); checked against the run's shard count
        int size = Math.Max(1, Math.Min(Wanted, (eval.Length + 2 * stages - 1) / (2 * stages))); // RunGrain.MicroBatches
        long predicted = eval.Sum(s => (long)s.Length - 1);
        long trained = (long)o.Steps * o.Batch * SeqLen;
        const double learningRate = 1e-4;
        Console.WriteLine($"model: {model} (DemoCheckpoint, fp32)");
        Console.WriteLine($"evaluation: {eval.Length} sequences of {SeqLen} bytes ({predicted} predicted tokens), batches of {size} in process as in the pipeline's micro-batches");
        Console.WriteLine($"fine-tuning: {o.Steps} steps of {o.Batch} sequences ({trained} tokens), lr {learningRate}; in process one batch per step, the pipeline micro-batches it");

        Func<Task<IReadOnlyList<Pass>>> InProcess(int threads) => () => Measurements.OnThread(threads, () =>
        {
            using var llama = LlamaModel.Load(model, CPU);
            EvalResult? result = null;
            double evalSeconds = MiniLmPipeline.Time(() => result = Perplexity.Evaluate(llama, eval, size, CPU));
            Console.WriteLine($"  in-process perplexity {result!.Value:R} over {result.Tokens} tokens");
            var trainable = llama.Parameters.Where(p => p.Key.Contains(".layers.", StringComparison.Ordinal) && p.Key.EndsWith("_proj.weight", StringComparison.Ordinal))
                .ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
            foreach (var t in trainable.Values) t.requires_grad_(true);
            using var optimizer = new MaskedAdamW(trainable, null, learningRate: learningRate, weightDecay: 0);
            double trainSeconds = MiniLmPipeline.Time(() =>
            {
                for (int step = 0; step < o.Steps; step++)
                {
                    using var scope = NewDisposeScope();
                    var ids = train.Skip(step * o.Batch).Take(o.Batch).SelectMany(s => s).ToArray();
                    var tokens = tensor(ids, [o.Batch, SeqLen], ScalarType.Int64, CPU);
                    var loss = Perplexity.Loss(llama.Forward(tokens), tokens, Enumerable.Repeat(SeqLen, o.Batch).ToArray());
                    loss.backward();
                    optimizer.Step();
                    optimizer.ZeroGrad();
                }
            });
            return (IReadOnlyList<Pass>)[new Pass("eval", evalSeconds, predicted, "tokens"), new Pass("finetune", trainSeconds, trained, "tokens")];
        });

        var cases = new List<Case> { new($"llama in-process {o.Threads} threads", InProcess(o.Threads)) };
        if (o.Silos.Contains(3) && o.Threads != 3) cases.Add(new("llama in-process 3 threads", InProcess(3)));
        var pairs = new List<(string, string)>();
        var clusters = new List<BenchCluster>();
        try
        {
            foreach (int silos in o.Silos)
            {
                int compute = silos == 1 ? o.Threads : 1;
                var cluster = await BenchCluster.StartAsync(silos, compute, Path.Combine(work, "state"));
                clusters.Add(cluster);
                string name = $"pipeline {silos} silo{(silos == 1 ? "" : "s")} x{compute} thr";
                async Task<IReadOnlyList<Pass>> Pipeline()
                {
                    await cluster.SetTorchThreadsAsync(1);
                    var spec = new RunSpec
                    {
                        ModelPath = model, OutputPath = Path.Combine(work, "out", Guid.NewGuid().ToString("N")), Sparsity = 0, Force = true,
                        EvalData = evalFile, FinetuneData = trainFile, FinetuneSteps = o.Steps, Batch = o.Batch, LearningRate = learningRate,
                    };
                    var (seconds, status) = await cluster.TimeAsync(spec,
                        ("evaluating the dense model", s => s.Baseline is not null),
                        ("round 1/1: fine-tuning", s => s.Phase != "round 1/1: fine-tuning"));
                    if (status.Shards != stages) Console.WriteLine($"note: the run has {status.Shards} shards, not {stages} stages");
                    Console.WriteLine($"  pipeline perplexity {status.Baseline!.Value:R} over {status.Baseline.Tokens} tokens");
                    return [new Pass("eval", seconds[0], predicted, "tokens"), new Pass("finetune", seconds[1], trained, "tokens")];
                }
                cases.Add(new(name, Pipeline));
                int total = silos * compute;
                pairs.Add((name, total == 3 && cases.Any(c => c.Name == "llama in-process 3 threads") ? "llama in-process 3 threads" : cases[0].Name));
                if (total == 3 && o.Threads != 3) pairs.Add((name, cases[0].Name));
            }
            Console.WriteLine("warm-up: one pass of every case (not counted)");
            foreach (var c in cases) foreach (var p in await c.Run()) Console.WriteLine($"  warm-up {c.Name} {p.Metric}: {p.Seconds:F2} s");
            var all = await Measurements.RunAsync(cases, o.Repeat);
            Measurements.Summarize(all, pairs);
        }
        finally
        {
            foreach (var c in clusters) await c.DisposeAsync();
        }
        return 0;
    }
}
