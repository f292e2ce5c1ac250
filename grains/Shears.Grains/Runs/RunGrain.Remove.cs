using System.Text.Json.Nodes;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Pruning.Structured;

namespace Shears.Grains.Runs;

// --remove: after the last round the shards say which slices their masks cover whole; the coordinator checks that they
// make a smaller model its config can describe, lays out the output, and the shards fill it.
public sealed partial class RunGrain
{
    /// <summary>The removal of a LLaMA-family checkpoint, from the shards' masks (null when the run does not remove).</summary>
    private async Task<RemovalPlan?> PlanRemovalAsync(CheckpointManifest manifest, RunPlan plan, RunSpec spec, CancellationToken token)
    {
        if (!spec.Remove) return null;
        var parts = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).RemovalAsync().Complete(Shard(s.Index), token)));
        var cuts = parts.SelectMany(p => p).Select(r => new TensorCut(r.Tensor, r.Axis, r.Removed)).ToArray();
        try
        {
            if (manifest.Format == CheckpointFormat.Onnx)
            {
                return EncoderRemoval.Plan(Shears.Pruning.Onnx.OnnxModel.Read(manifest.PathOf(manifest.Files[0].FileName)), cuts);
            }
            return LlamaRemoval.Plan(manifest, LlamaConfig.Load(manifest.Root), cuts);
        }
        catch (RemovalException e)
        {
            throw new RunRejectedException($"--remove: {e.Message}");
        }
    }

    /// <summary>
    /// The output of a removal: a safetensors checkpoint laid out for the shards to fill, or, for an ONNX model, the
    /// input's layout (the shards write their masked weights in place; <see cref="CutOnnxOutput"/> then cuts the graph).
    /// </summary>
    private static void CreateRemovedLayout(CheckpointManifest manifest, RunPlan plan, RemovalPlan removal, string folder)
    {
        if (manifest.Format == CheckpointFormat.Onnx)
        {
            CheckpointOutput.CreateLayout(manifest, folder, plan.Shards.SelectMany(s => s.Pieces.Select(p => p.Tensor)).ToHashSet(StringComparer.Ordinal));
            return;
        }
        RemovedLayout.Plan(manifest, removal.Cuts, name => LlamaRemoval.Renamed(name, removal.RemovedLayers)).Create(folder, removal.Config, removal.RemovedLayers);
    }

    /// <summary>After the shards wrote an ONNX model's masked weights: its cut initializers rewritten smaller, and a config.json beside it given the new width.</summary>
    private static void CutOnnxOutput(CheckpointManifest manifest, RemovalPlan? removal, string folder)
    {
        if (removal is null) return;
        string model = Path.Combine(folder, manifest.Files[0].FileName);
        var edit = Shears.Pruning.Onnx.OnnxGraphEdit.None;
        if (removal.RemovedLayers.Count > 0)
        {
            var graph = Shears.Pruning.Onnx.OnnxModel.Read(model);
            edit = EncoderLayerRemoval.Plan(graph, Shears.Pruning.Encoders.BertWeightNames.FromOnnx(graph), removal.RemovedLayers);
        }
        Shears.Pruning.Onnx.OnnxRemovalWriter.Write(model, model, removal.Cuts.Where(c => c.Removed.Length > 0).ToArray(), removal.Scalars, edit);
        string config = Path.Combine(folder, "config.json");
        if (File.Exists(config) && System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config)) is JsonObject json)
        {
            var fields = removal.Config.Where(f => json.ContainsKey(f.Key)).ToDictionary(f => f.Key, f => f.Value, StringComparer.Ordinal);
            if (fields.Count > 0) File.WriteAllText(config, RemovedLayout.EditConfig(File.ReadAllText(config), fields, config));
        }
    }

    private static TensorRemoval[] Wire(RemovalPlan removal) =>
        removal.Cuts.Select(c => new TensorRemoval { Tensor = c.Tensor, Axis = c.Axis, Removed = c.Removed }).ToArray();

    /// <summary>The report's account of a removal: the config's new sizes, each layer's removed units, each cut tensor's shapes.</summary>
    internal static JsonObject? RemovalReport(RemovalPlan? removal, CheckpointManifest manifest)
    {
        if (removal is null) return null;
        static JsonArray Ints(IEnumerable<int> values) => new(values.Select(v => (JsonNode)v).ToArray());
        return new JsonObject
        {
            ["config"] = new JsonObject(removal.Config.Select(f => KeyValuePair.Create(f.Key, (JsonNode?)f.Value))),
            ["layers"] = new JsonArray(removal.Layers.Select(l => (JsonNode)new JsonObject
            {
                ["layer"] = l.Layer, ["removed"] = l.Removed, ["neurons"] = Ints(l.Neurons), ["heads"] = Ints(l.Heads), ["keyValueHeads"] = Ints(l.KeyValueHeads),
            }).ToArray()),
            ["tensors"] = new JsonArray(removal.Cuts.Select(c => (JsonNode)new JsonObject
            {
                ["name"] = c.Tensor,
                ["shape"] = new JsonArray(manifest.Get(c.Tensor).Shape.Select(d => (JsonNode)d).ToArray()),
                ["outputShape"] = new JsonArray(c.Shape(manifest.Get(c.Tensor).Shape).Select(d => (JsonNode)d).ToArray()),
            }).ToArray()),
        };
    }
}
