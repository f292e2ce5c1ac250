using Microsoft.Extensions.Logging;
using Shears.Contracts;
using Shears.Grains.Placement;
using Shears.Pruning.Checkpoints;

namespace Shears.Grains.Runs;

// Memory budgets: a run is refused before it starts when its shards cannot be placed within the worker silos' budgets;
// shards that may be split (unstructured, no pipeline) are made smaller until they fit, and a pipeline's decoder layers
// are run as two stages each (attention, MLP) when they do not fit whole.
public sealed partial class RunGrain
{
    /// <summary>The expected memory of each shard of <paramref name="plan"/> (<see cref="ShardMemory"/>).</summary>
    private static long[] ShardNeeds(RunPlan plan, CheckpointManifest manifest, RunSpec spec) =>
        plan.Shards.Select(s => ShardMemory.Estimate(s, plan.Stages?[s.Index], manifest, spec)).ToArray();

    private static string Describe(RunPlan plan, int shard)
    {
        string? stage = plan.Stages?[shard] is { } s ? s.Kind == StagePlan.LayerKind ? $"the stage of {s.Describe()}" : $"the {s.Kind} stage" : null;
        var tensors = plan.Shards[shard].Pieces.Select(p => p.Tensor).Distinct().ToArray();
        string held = tensors.Length switch { 0 => "", 1 => $"'{tensors[0]}'", _ => $"'{tensors[0]}' and {tensors.Length - 1} more tensors" };
        return stage is null ? held : held.Length == 0 ? stage : $"{stage}: {held}";
    }

    /// <summary>The plan, or a plan of smaller shards, that fits the budgets known here; refuses the run when none does.</summary>
    private RunPlan FitBudgets(RunPlan plan, CheckpointManifest manifest, RunSpec spec)
    {
        // --shards asked for an exact count: refused rather than cut further.
        bool splittable = plan.Stages is null && spec.Pattern == RunOptions.Patterns.Unstructured && spec.Shards is null;
        RunRejectedException? first = null;
        while (true)
        {
            // Halving the largest shard's size each time: a plan of at most that many elements per shard.
            long elements = plan.Shards.Max(s => s.Pieces.Sum(p => p.RowCount * p.RowElements)) / 2;
            var needs = ShardNeeds(plan, manifest, spec);
            try
            {
                budgets.Check(RunId, needs, i => Describe(plan, i));
                return plan;
            }
            // Smaller shards pack better, but cannot make room that is not there: refused at once when the total does
            // not fit, and with the original plan's account when splitting does not help.
            catch (RunRejectedException e) when (splittable && elements >= MinimumShardElements && plan.Shards.Count < MaximumShards
                                                 && needs.Sum() <= budgets.FreeTotal(RunId))
            {
                first ??= e;
                plan = RunPlanner.Plan(manifest, spec with { ShardElements = elements });
                logger.LogInformation("Run {Run}: shards of at most {Elements} elements, to fit the silos' memory budgets", RunId, elements);
            }
            // A pipeline whose decoder layers do not fit: each layer as two stages, its attention and its MLP, on
            // shards of their own. Refused with that plan's account (naming the half that still does not fit).
            catch (RunRejectedException) when (plan.Stages is { } stages && stages.All(st => st.Part is null) && RunPlanner.CanSplitLayers(manifest, spec)
                                               && LayerStageRefused(plan, needs) && needs.Sum() <= budgets.FreeTotal(RunId))
            {
                plan = RunPlanner.Plan(manifest, spec, splitLayers: true);
                logger.LogInformation("Run {Run}: each decoder layer as two stages (attention, MLP), to fit the silos' memory budgets", RunId);
            }
            catch (RunRejectedException) when (first is not null)
            {
                throw first;
            }
        }
    }

    /// <summary>Whether a decoder layer's stage is among the largest shards, the ones a refusal is about.</summary>
    private static bool LayerStageRefused(RunPlan plan, long[] needs)
    {
        long largest = needs.Max();
        return plan.Stages!.Where((s, i) => s.Kind == StagePlan.LayerKind && needs[i] * 2 > largest).Any();
    }

    /// <summary>Shards are not split below this many elements to fit a budget (a budget that small is refused).</summary>
    private const long MinimumShardElements = 1 << 12;

    /// <summary>Nor into more shards than this.</summary>
    private const int MaximumShards = 4096;
}
