using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Shears.Contracts;
using Shears.Grains.Diagnostics;
using Shears.Grains.Placement;
using Shears.Grains.Shards;
using Shears.Pruning.Allocation;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Schedules;
using Shears.Pruning.Scoring;
using Shears.Pruning.Selection;

namespace Shears.Grains.Runs;

// Evaluation and fine-tuning through the model pipeline of the shards.
public sealed partial class RunGrain
{
    /// <summary>Sequences per pipeline message: hidden states of a batch stay within the 16 MB message limit.</summary>
    private static int BatchFitting(IReadOnlyList<long[]> data, int hidden, int wanted)
    {
        long longest = data.Max(s => (long)s.Length);
        long perSequence = longest * hidden * sizeof(float);
        return (int)Math.Clamp(Orleans.Hosting.ShearsHostingExtensions.MaxMessageBytes / 2 / Math.Max(1, perSequence), 1, wanted);
    }

    // The pipeline of the shards loaded last (a recovery loads them again, under a new epoch).
    private PipelineDriver? _pipeline;
    private PipelineDriver Pipeline => _pipeline ?? throw new InvalidOperationException("the shards' pipeline is used before the shards were loaded");

    /// <summary>
    /// Splits <paramref name="data"/> into micro-batches that fit the message limit and hold at most
    /// <paramref name="wanted"/> sequences, and, when the data allows, at least two for each compute thread of the silos
    /// that hold the stages: stages work at once only on different micro-batches, and each compute thread runs one.
    /// </summary>
    private ActivationBatch[] MicroBatches(IReadOnlyList<long[]> data, int hidden, int wanted)
    {
        int size = Math.Max(1, Math.Min(BatchFitting(data, hidden, wanted), (data.Count + 2 * _computeWorkers - 1) / (2 * _computeWorkers)));
        return data.Chunk(size).Select(ids => new ActivationBatch { TokenIds = ids }).ToArray();
    }

    // Compute threads of the silos holding the loaded shards (set by every load).
    private int _computeWorkers = 1;

    /// <summary>Perplexity through the pipeline: micro-batches enter the embedding shard and leave the head as summed NLL.</summary>
    private async Task<EvalMetric> EvaluateAsync(RunPlan plan, IReadOnlyList<long[]> data, int hidden, CancellationToken token)
    {
        var outputs = await Pipeline.EvaluateAsync(MicroBatches(data, hidden, 64), token);
        double nll = outputs.Sum(o => o.Result!.NllSum);
        long tokens = outputs.Sum(o => o.Result!.Tokens);
        return new EvalMetric { Metric = "perplexity", Value = Math.Exp(nll / tokens), Tokens = tokens };
    }

    /// <summary>
    /// Encoders: sentence embeddings through the pipeline (the last layer pools and normalizes). The sentences go in
    /// by length, longest first (ties in data order), so that a micro-batch pads its sentences little — as
    /// sentence-transformers' encode does; the padded positions change no sentence's embedding beyond float rounding.
    /// The embeddings come back in data order.
    /// </summary>
    private async Task<float[][]> EmbedAsync(IReadOnlyList<long[]> sentences, int hidden, CancellationToken token)
    {
        int[] order = Enumerable.Range(0, sentences.Count).OrderByDescending(i => sentences[i].Length).ToArray();
        var outputs = await Pipeline.EvaluateAsync(MicroBatches(order.Select(i => sentences[i]).ToArray(), hidden, 64), token);
        var embeddings = new float[sentences.Count][];
        int next = 0;
        foreach (var row in outputs.SelectMany(o => Unflatten(o.Result!.Embeddings, hidden))) embeddings[order[next++]] = row;
        return embeddings;
    }

    private static float[] Flatten(float[][] rows) => rows.SelectMany(r => r).ToArray();

    private string DensePath(string name) => Path.Combine(state.State.StateDirectory!, $"dense-{name}.f32");

    /// <summary>Writes embeddings where every silo reaches them (a coordinator elsewhere reads them back), atomically.</summary>
    private void WriteDense(string name, float[] values)
    {
        string path = DensePath(name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path + ".tmp", System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        File.Move(path + ".tmp", path, overwrite: true);
    }

    private float[] ReadDense(string name) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(DensePath(name))).ToArray();

    private static float[][] Unflatten(float[] flat, int width) => flat.Chunk(width).ToArray();

    // The dense evaluation embeddings' neighbours: the same for every round of a run (one run per grain).
    private int[][]? _denseNeighbours;

    /// <summary>
    /// Fidelity (mean and 5th percentile cosine to the dense embeddings) and neighbour agreement at 10 (the dense
    /// model's neighbours found once per activation). With query embeddings (sentence pairs), also paraphrase retrieval:
    /// each query's match is the corpus sentence of the same row; top-1 and MRR with queries and corpus from the pruned
    /// model, and with the corpus embedded by the dense model (an index built before pruning).
    /// </summary>
    private EvalMetric EncoderMetric(float[][] dense, float[][] pruned, IReadOnlyList<long[]> sentences, float[][]? prunedQueries)
    {
        var fidelity = Shears.Pruning.Evaluation.EmbeddingQuality.Fidelity(dense, pruned);
        int k = Math.Min(10, dense.Length - 1);
        if (_denseNeighbours is not { } known || known.Length != dense.Length || known.Any(n => n.Length != k))
            _denseNeighbours = known = Shears.Pruning.Evaluation.EmbeddingQuality.NearestNeighbours(dense, k);
        double agreement = Shears.Pruning.Evaluation.EmbeddingQuality.NeighbourAgreement(known, pruned, k);
        var measures = new Dictionary<string, double>
        {
            ["fidelityP5"] = fidelity.Percentile5, ["neighbourAgreement10"] = agreement, ["sentences"] = dense.Length,
        };
        if (prunedQueries is not null && prunedQueries.Length == pruned.Length)
        {
            var retrieval = Shears.Pruning.Evaluation.ParaphraseRetrieval.Measure(prunedQueries, pruned, dense);
            measures["retrievalTop1"] = retrieval.SameModel.Top1;
            measures["retrievalMrr"] = retrieval.SameModel.Mrr;
            measures["retrievalDenseCorpusTop1"] = retrieval.DenseCorpus.Top1;
            measures["retrievalDenseCorpusMrr"] = retrieval.DenseCorpus.Mrr;
        }
        return new EvalMetric { Metric = "fidelity", Value = fidelity.Mean, Tokens = sentences.Sum(s => (long)s.Length), Measures = measures };
    }

    /// <summary>
    /// Recovery fine-tuning: each step sends one batch through the pipeline as micro-batches (one per compute thread of
    /// the stages' silos) and the gradients back;
    /// each shard accumulates them, steps its own optimizer and re-applies its masks. Batches follow the data in order,
    /// round after round. Encoders distill toward the dense model's sentence embeddings (<paramref name="targets"/>).
    /// </summary>
    private async Task<double> FineTuneAsync(RunPlan plan, RunSpec spec, IReadOnlyList<long[]> data, int round, int hidden, CancellationToken token, float[]? targets = null)
    {
        int batch = TrainingBatch(spec, data, hidden);
        // As many micro-batches as compute threads can work on them at once: more only add overhead.
        int parts = Math.Min(batch, _computeWorkers);
        int size = (batch + parts - 1) / parts;
        double lossSum = 0;
        int steps = StepsPerRound(spec, data.Count, batch);
        var shape = spec.LrSchedule == RunOptions.LrSchedules.Cosine ? LearningRateShape.Cosine : LearningRateShape.Constant;
        int layers = Math.Max(1, plan.Stages!.Where(s => s.Kind == StagePlan.LayerKind).Select(s => s.Layer).Distinct().Count());
        for (int step = 0; step < steps; step++)
        {
            token.ThrowIfCancellationRequested();
            long first = ((long)(round - 1) * steps + step) * batch;
            var rows = Enumerable.Range(0, batch).Select(i => (int)((first + i) % data.Count)).ToArray();
            var micro = rows.Chunk(size).Select(part => new ActivationBatch
            {
                TokenIds = part.Select(r => data[r]).ToArray(),
                Targets = targets is null ? [] : part.SelectMany(r => targets.AsSpan(r * hidden, hidden).ToArray()).ToArray(),
            }).ToArray();
            // Each micro-batch's loss counts by its share of the step's loss terms (predictions, or sentences when
            // distilling), so the accumulated gradient is the one of the whole batch.
            double Terms(ActivationBatch b) => targets is null ? b.TokenIds.Sum(t => Math.Max(0, t.Length - 1)) : b.TokenIds.Length;
            double total = micro.Sum(Terms);
            var weights = micro.Select(b => micro.Length == 1 ? 1.0 : Terms(b) / total).ToArray();
            double rate = LearningRateSchedule.At(shape, spec.LearningRate, step, steps, spec.WarmupSteps);
            // --distill hidden: --hidden-weight times the mean over the model's layers of the mean over the step's real
            // tokens of each token's relative squared error; every layer stage adds its part of that sum.
            double hiddenWeight = spec.Distill == RunOptions.DistillModes.Hidden
                ? spec.HiddenWeight / ((double)layers * micro.Sum(b => b.TokenIds.Sum(t => (long)t.Length)))
                : 0;
            lossSum += await Pipeline.TrainStepAsync(micro, weights, rate, token, hiddenWeight);
        }
        await Task.WhenAll(plan.Shards.Select(s => GrainFactory.GetGrain<IStageGrain>($"{RunId}/{s.Index}").EndTrainingAsync().Complete(Shard(s.Index), token)));
        return lossSum / steps;
    }

    /// <summary>How many rows of the training data fine-tuning reads over all rounds (it reads them in order, from the first).</summary>
    internal static int TrainingRowsUsed(RunSpec spec, IReadOnlyList<long[]> data, int hidden, int rounds)
    {
        int batch = TrainingBatch(spec, data, hidden);
        long used = (long)rounds * StepsPerRound(spec, data.Count, batch) * batch;
        return (int)Math.Min(data.Count, used);
    }

    /// <summary>--batch, or fewer when a step's states would not fit a message (--distill hidden sends the dense model's beside them).</summary>
    private static int TrainingBatch(RunSpec spec, IReadOnlyList<long[]> data, int hidden) =>
        BatchFitting(data, spec.Distill == RunOptions.DistillModes.Hidden ? 2 * hidden : hidden, spec.Batch);

    /// <summary>--finetune-steps, or enough steps of <paramref name="batch"/> rows for --epochs passes over the data.</summary>
    internal static int StepsPerRound(RunSpec spec, int rows, int batch) =>
        spec.FinetuneSteps > 0 ? spec.FinetuneSteps : (int)Math.Max(1, ((long)spec.Epochs * rows + batch - 1) / batch);
}
