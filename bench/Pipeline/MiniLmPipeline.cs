using System.Diagnostics;
using Shears.Contracts;
using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.PipelineBench;

/// <summary>
/// all-MiniLM-L6-v2: sentence embeddings through the stage pipeline (the dense embedding pass of a run with --eval)
/// against ONNX Runtime and TorchSharp embedding the same sentences, in the same micro-batches (longest first, as the
/// pipeline and sentence-transformers send them; ONNX Runtime also in data order), in this process.
/// </summary>
public static class MiniLmPipeline
{
    // The run's encoder tokenizes to 128 tokens (RunGrain.EncoderSentences); the micro-batching below mirrors
    // RunGrain.MicroBatches for EmbedAsync (at most 64 sentences, at least two micro-batches per compute thread, 8 MB of activations).
    private const int MaxTokens = 128, Wanted = 64;

    public static async Task<int> RunAsync(Options o)
    {
        string work = Directory.CreateDirectory(o.Work).FullName;
        string model = o.Model ?? MiniLmModel.Extract(Path.Combine(work, "minilm")).ModelPath;
        string vocabulary = Path.Combine(Path.GetDirectoryName(model)!, MiniLmModel.VocabularyFileName);
        var sentences = File.ReadLines(o.Data).Skip(1).Select(l => l.Split('\t')).Where(c => c.Length == 3)
            .Select(c => c[^1].Trim()).Where(s => s.Length > 0).Take(o.Count).ToArray();
        string sentencesFile = Path.Combine(work, "sentences.txt");
        File.WriteAllLines(sentencesFile, sentences);

        var tokenizer = BertTextTokenizer.Create(vocabulary, maxLength: MaxTokens);
        var ids = sentences.Select(s => tokenizer.Tokenize(s)).ToArray();
        int stages = 7; // the embedding and 6 layers (RunPlan's encoder stages); checked against the run's shard count below
        // RunGrain.MicroBatches for one silo with o.Threads compute threads: at least two micro-batches per compute thread.
        int size = MicroBatch(ids, o.Threads);
        // RunGrain.EmbedAsync sends the sentences longest first (ties in data order), as sentence-transformers' encode does.
        var byLength = Enumerable.Range(0, sentences.Length).OrderByDescending(i => ids[i].Count).Select(i => sentences[i]).ToArray();
        string[][] Chunks(string[] all) => all.Chunk(size).ToArray();
        var dataOrder = Chunks(sentences);
        var sorted = Chunks(byLength);
        long tokens = ids.Sum(t => (long)t.Count);
        long Padded(string[][] chunks) => chunks.Sum(c => (long)c.Length * c.Max(x => tokenizer.Tokenize(x).Count));
        Console.WriteLine($"model: {model}");
        Console.WriteLine($"sentences: {sentences.Length} (WEB column of {o.Data}), {tokens} tokens with [CLS]/[SEP], longest {ids.Max(t => t.Count)}; " +
                          $"micro-batches of {size} ({dataOrder.Length}): in data order {Padded(dataOrder)} positions with padding, by length {Padded(sorted)}");
        using var session = new OnnxBertSession(model, o.Threads);
        using var session3 = o.Silos.Contains(3) && o.Threads != 3 ? new OnnxBertSession(model, 3) : null;
        using var encoder = BertEncoder.Load(model, CPU);

        IReadOnlyList<Pass> Embedded(double seconds) => [new Pass("embed", seconds, sentences.Length, "sentences")];
        Func<Task<IReadOnlyList<Pass>>> Ort(OnnxBertSession s, string[][] chunks) => () => Task.FromResult(Embedded(Time(() =>
        {
            foreach (var chunk in chunks)
            {
                var batch = tokenizer.Encode(chunk);
                var hidden = s.LastHiddenState(batch);
                BertEncoder.SentenceEmbeddings(hidden, batch.AttentionMask, batch.Count, batch.Length, hidden.Length / (batch.Count * batch.Length));
            }
        })));
        Func<Task<IReadOnlyList<Pass>>> Torch(int threads, string[][] chunks) => async () => Embedded(await Measurements.OnThread(threads, () => Time(() =>
        {
            foreach (var chunk in chunks)
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                var (inputIds, mask, types) = tokenizer.Encode(chunk).ToTensors(CPU);
                BertEncoder.SentenceEmbeddings(encoder.Forward(inputIds, mask, types), mask);
            }
        })));

        var cases = new List<Case>
        {
            new($"onnxruntime {o.Threads} threads", Ort(session, sorted)), new($"torch in-process {o.Threads} threads", Torch(o.Threads, sorted)),
            new($"onnxruntime {o.Threads} thr data order", Ort(session, dataOrder)),
        };
        if (session3 is not null) cases.Add(new("onnxruntime 3 threads", Ort(session3, sorted)));
        var pairs = new List<(string, string)>();
        var clusters = new List<BenchCluster>();
        string stateRoot = Path.Combine(work, "state");
        try
        {
            foreach (int silos in o.Silos)
            {
                // One silo gets all the compute threads; several silos one each (three cannot share two).
                int compute = silos == 1 ? o.Threads : 1;
                var cluster = await BenchCluster.StartAsync(silos, compute, stateRoot);
                clusters.Add(cluster);
                string name = $"pipeline {silos} silo{(silos == 1 ? "" : "s")} x{compute} thr";
                RunSpec Spec() => new()
                {
                    ModelPath = model, OutputPath = Path.Combine(work, "out", Guid.NewGuid().ToString("N")), Sparsity = 0, EvalData = sentencesFile, Force = true,
                };
                async Task<IReadOnlyList<Pass>> Pipeline()
                {
                    await cluster.SetTorchThreadsAsync(1);
                    var (seconds, status) = await cluster.TimeAsync(Spec(),
                        ("embedding sentences with the dense model", s => s.Baseline is not null || s.Phase != "embedding sentences with the dense model"));
                    if (status.Shards != stages) Console.WriteLine($"note: the run has {status.Shards} shards, not {stages} stages: its micro-batches differ from the in-process ones");
                    return Embedded(seconds[0]);
                }
                cases.Add(new(name, Pipeline));
                int total = silos * compute;
                pairs.Add((name, total == o.Threads ? cases[0].Name : total == 3 && session3 is not null ? "onnxruntime 3 threads" : cases[0].Name));
                pairs.Add((name, cases[1].Name));
                if (silos == 1) pairs.Add((name, cases[2].Name));
            }
            pairs.Add((cases[1].Name, cases[0].Name));
            pairs.Add((cases[0].Name, cases[2].Name));

            Console.WriteLine("warm-up: one pass of every case (not counted)");
            foreach (var c in cases) foreach (var p in await c.Run()) Console.WriteLine($"  warm-up {c.Name}: {p.Seconds:F2} s");
            var all = await Measurements.RunAsync(cases, o.Repeat);
            Measurements.Summarize(all, pairs);
        }
        finally
        {
            foreach (var c in clusters) await c.DisposeAsync();
        }
        return 0;
    }

    private static int MicroBatch(IReadOnlyList<IReadOnlyList<int>> ids, int computeThreads)
    {
        long perSequence = ids.Max(t => (long)t.Count) * 384 * sizeof(float);
        int fitting = (int)Math.Clamp(Orleans.Hosting.ShearsHostingExtensions.MaxMessageBytes / 2 / perSequence, 1, Wanted);
        return Math.Max(1, Math.Min(fitting, (ids.Count + 2 * computeThreads - 1) / (2 * computeThreads)));
    }

    public static double Time(Action work)
    {
        var clock = Stopwatch.StartNew();
        work();
        return clock.Elapsed.TotalSeconds;
    }
}
