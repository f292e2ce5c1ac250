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
    private async Task<LlamaRemovalPlan?> PlanRemovalAsync(CheckpointManifest manifest, RunPlan plan, RunSpec spec, CancellationToken token)
    {
        if (!spec.Remove) return null;
        var parts = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).RemovalAsync().Complete(Shard(s.Index), token)));
        var cuts = parts.SelectMany(p => p).Select(r => new TensorCut(r.Tensor, r.Axis, r.Removed)).ToArray();
        var config = LlamaConfig.Load(manifest.Root);
        try
        {
            return LlamaRemoval.Plan(manifest, config, cuts);
        }
        catch (RemovalException e)
        {
            throw new RunRejectedException($"--remove: {e.Message}");
        }
    }

    private static TensorRemoval[] Wire(LlamaRemovalPlan removal) =>
        removal.Cuts.Select(c => new TensorRemoval { Tensor = c.Tensor, Axis = c.Axis, Removed = c.Removed }).ToArray();

    /// <summary>The report's account of a removal: the config's new sizes, each layer's removed units, each cut tensor's shapes.</summary>
    internal static JsonObject? RemovalReport(LlamaRemovalPlan? removal, CheckpointManifest manifest)
    {
        if (removal is null) return null;
        static JsonArray Ints(IEnumerable<int> values) => new(values.Select(v => (JsonNode)v).ToArray());
        return new JsonObject
        {
            ["config"] = new JsonObject(removal.Config.Select(f => KeyValuePair.Create(f.Key, (JsonNode?)f.Value))),
            ["layers"] = new JsonArray(removal.Layers.Select(l => (JsonNode)new JsonObject
            {
                ["layer"] = l.Layer, ["neurons"] = Ints(l.Neurons), ["heads"] = Ints(l.Heads), ["keyValueHeads"] = Ints(l.KeyValueHeads),
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
