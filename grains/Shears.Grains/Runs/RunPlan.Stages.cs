using Shears.Contracts;
using Shears.Pruning.Checkpoints;

namespace Shears.Grains.Runs;

// Pipeline plans: a run that evaluates, fine-tunes or calibrates holds the model as stages, one shard each.
public static partial class RunPlanner
{
    /// <summary>
    /// A run that evaluates or fine-tunes holds the model as a pipeline: one shard per stage (the
    /// embedding, each decoder layer, the head), each with the stage's tensors whole. With
    /// <paramref name="splitLayers"/> each decoder layer is two stages, its attention and its MLP
    /// (<see cref="Shears.Pruning.Models.LlamaLayerPart"/>): for layers larger than any silo's memory budget.
    /// </summary>
    private static RunPlan PipelinePlan(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable, bool splitLayers)
    {
        if (manifest.Format == CheckpointFormat.Onnx)
        {
            if (splitLayers) throw new ArgumentException("an encoder's layers are not split", nameof(splitLayers));
            return EncoderPlan(manifest, spec, prunable);
        }
        if (splitLayers && spec.UsesCalibration)
            throw new ArgumentException("a calibrated run computes each layer on one shard", nameof(splitLayers));
        Shears.Pruning.Models.LlamaConfig config;
        try { config = Shears.Pruning.Models.LlamaConfig.Load(manifest.Root); }
        catch (Exception e) when (e is Shears.Pruning.Models.LlamaConfigException or IOException)
        {
            throw new RunRejectedException($"--eval/--finetune-steps need a LLaMA-family config.json: {e.Message}");
        }
        var stages = new List<StagePlan> { new() { Kind = StagePlan.EmbeddingKind, Tensors = Shears.Pruning.Models.LlamaWeights.EmbeddingNames() } };
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            var names = Shears.Pruning.Models.LlamaWeights.LayerNames(manifest, layer);
            if (!splitLayers)
            {
                stages.Add(new StagePlan { Kind = StagePlan.LayerKind, Layer = layer, Tensors = names });
                continue;
            }
            foreach (var (part, name) in new[] { (Shears.Pruning.Models.LlamaLayerPart.Attention, StagePlan.AttentionPart), (Shears.Pruning.Models.LlamaLayerPart.Mlp, StagePlan.MlpPart) })
                stages.Add(new StagePlan { Kind = StagePlan.LayerKind, Layer = layer, Part = name, Tensors = names.Where(n => Shears.Pruning.Models.LlamaWeights.PartOf(n) == part).ToArray() });
        }
        stages.Add(new StagePlan { Kind = StagePlan.HeadKind, Tensors = Shears.Pruning.Models.LlamaWeights.HeadNames(config) });
        int hidden = config.HiddenSize;
        foreach (var stage in stages)
            foreach (string name in stage.Tensors)
                if (!manifest.Contains(name))
                    throw new RunRejectedException($"{manifest.Root}: the model's {stage.Kind} stage needs tensor '{name}', which the checkpoint lacks");
        foreach (var stage in stages.Where(s => s.Kind == StagePlan.LayerKind))
            foreach (string name in stage.Tensors)
                if (!Shears.Pruning.Models.LlamaWeights.IsLayerTensor(config, name))
                    throw new RunRejectedException(
                        $"{manifest.Root}: tensor '{name}' is not part of a {config.ModelType} decoder layer as Shears computes it (config.json's model_type); evaluation, calibration and fine-tuning would ignore it");
        return StagedPlan(manifest, spec, prunable, stages, hidden);
    }

    /// <summary>A BERT-family ONNX encoder as a pipeline: the embeddings, then one stage per encoder layer; the last pools.</summary>
    private static RunPlan EncoderPlan(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable)
    {
        Shears.Pruning.Encoders.BertWeightNames names;
        int hidden;
        try
        {
            var onnx = Shears.Pruning.Onnx.OnnxModel.Read(manifest.PathOf(manifest.Files[0].FileName));
            names = Shears.Pruning.Encoders.BertWeightNames.FromOnnx(onnx);
            hidden = Shears.Pruning.Encoders.BertConfig.FromOnnx(onnx, names).HiddenSize;
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or InvalidOperationException or CheckpointFormatException)
        {
            throw new RunRejectedException($"--eval/--finetune-steps need a BERT-family encoder: {e.Message}");
        }
        var stages = new List<StagePlan> { new() { Kind = StagePlan.EmbeddingKind, Model = StagePlan.BertModel, Tensors = names.Embeddings.All } };
        for (int layer = 0; layer < names.Layers.Count; layer++)
            stages.Add(new StagePlan { Kind = StagePlan.LayerKind, Layer = layer, Model = StagePlan.BertModel, Tensors = names.Layers[layer].All });
        return StagedPlan(manifest, spec, prunable, stages, hidden);
    }

    private static RunPlan StagedPlan(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable, List<StagePlan> stages, int hidden)
    {
        stages = stages.Select((s, i) => s with { Next = i + 1 < stages.Count ? i + 1 : -1 }).ToList();

        bool global = spec.Scope == RunOptions.Scopes.Global;
        var order = prunable.Select((t, i) => (t.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        var shards = new List<ShardPlan>();
        var placed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var stage in stages)
        {
            var pieces = new List<TensorPiece>();
            foreach (string name in stage.Tensors.Where(order.ContainsKey).Order(StringComparer.Ordinal))
            {
                var t = manifest.Get(name);
                if (!placed.Add(name)) continue; // a tied embedding is pruned once, by the embedding stage
                pieces.Add(new TensorPiece { Tensor = name, RowStart = 0, RowCount = t.Shape[0], RowElements = t.ElementCount / t.Shape[0], Group = global ? 0 : order[name] });
            }
            shards.Add(new ShardPlan { Index = shards.Count, Pieces = pieces, CopyTensors = [] });
        }
        foreach (var t in prunable)
            if (!placed.Contains(t.Name))
                throw new RunRejectedException($"tensor '{t.Name}' is to be pruned but belongs to no stage of the model (embedding, layers, head)");
        if (spec.NeedsCalibration || spec.NeedsOutliers || spec.RanksLayers)
            foreach (var (stage, shard) in stages.Zip(shards))
                if (stage.Kind != StagePlan.LayerKind && shard.Pieces.Count > 0)
                    throw new RunRejectedException(
                        $"{(spec.NeedsCalibration ? $"--method {spec.Method} prunes" : spec.RanksLayers ? "--pattern layers removes" : "--scope owl allocates over")} the model's layers' weights; '{shard.Pieces[0].Tensor}' lies in the {stage.Kind}: leave it out of --include");

        var copies = SpreadCopies(manifest, placed, shards.Count);
        return new RunPlan
        {
            Prunable = prunable.Select(t => t.Name).ToArray(),
            Shards = shards.Select((s, i) => s with { CopyTensors = copies[i] }).ToArray(),
            GroupElements = global ? [prunable.Sum(t => t.ElementCount)] : prunable.Select(t => t.ElementCount).ToArray(),
            PrunableWeights = prunable.Sum(t => t.ElementCount),
            Heads = spec.Pattern == RunOptions.Patterns.Heads ? ReadHeadLayout(manifest) : null,
            Stages = stages,
            Hidden = hidden,
        };
    }
}
