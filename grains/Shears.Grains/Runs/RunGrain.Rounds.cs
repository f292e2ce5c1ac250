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

// How a round is decided from the shards' statistics.
public sealed partial class RunGrain
{
    /// <summary>Per round, per selection group (tensor): the cumulative masked count progressive allocation asks for.</summary>
    private static long[][] ProgressiveTargets(RunPlan plan, ShardInfo[] infos, double[] targets, double spread)
    {
        var absSum = new double[plan.GroupElements.Length];
        for (int s = 0; s < plan.Shards.Count; s++)
            for (int p = 0; p < plan.Shards[s].Pieces.Count; p++)
                absSum[plan.Shards[s].Pieces[p].Group] += infos[s].AbsSumPerPiece[p];
        var importance = absSum.Select((sum, g) => sum / plan.GroupElements[g]).ToArray();
        return targets.Select(t => ProgressiveAllocation.Allocate(plan.GroupElements, importance, t, spread).Counts).ToArray();
    }

    /// <summary>One round: local decisions where a group lies on one piece, distributed exact selection elsewhere.</summary>
    private async Task<(uint? Threshold, long Bytes)> RunRoundAsync(
        RunPlan plan, RunSpec spec, int round, double target, long[][] masked, long[]? groupTargets, IReadOnlyList<long[]>? calibration, CancellationToken token)
    {
        long bytes = 0;
        if (spec.NeedsCalibration)
        {
            // Calibration flows layer by layer: each layer is pruned from the inputs that the
            // already-pruned layers before it compute, then hands its outputs on.
            var batches = MicroBatches(calibration!, plan.Hidden, 16);
            string pass = await Pipeline.FeedCalibrationAsync(batches, token);
            try
            {
                foreach (var stage in plan.Stages!.Select((s, i) => (s, i)).Where(x => x.s.Kind == StagePlan.LayerKind))
                {
                    token.ThrowIfCancellationRequested();
                    masked[stage.i] = (await Pipeline.PruneCalibratedAsync(pass, stage.i, round, target, batches.Length, token)).MaskedPerPiece;
                }
            }
            finally
            {
                await Pipeline.EndAsync(pass);
            }
            return (null, 0);
        }
        if (spec.Pattern == RunOptions.Patterns.Heads && spec.Scope == RunOptions.Scopes.Global)
        {
            // Every head of every layer ranked together: scores from the shards, one decision, each shard masks its own.
            var scores = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).HeadScoresAsync()));
            var tensorRank = plan.Prunable.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
            var layers = scores.SelectMany(r => r.Layers.Select((name, i) => (Name: name, Scores: r.Scores[i], Pruned: r.Pruned[i])))
                .OrderBy(l => tensorRank[l.Name]).ToArray();
            var chosen = Shears.Pruning.Heads.HeadPruning.SelectHeadsGlobal(layers.Select(l => l.Scores).ToArray(), target,
                layers.SelectMany((l, i) => l.Pruned.Select(h => (i, h))).ToArray());
            var decision = new HeadDecision
            {
                Round = round,
                Heads = chosen.GroupBy(c => c.Layer).ToDictionary(g => layers[g.Key].Name, g => g.Select(c => c.Head).ToArray(), StringComparer.Ordinal),
            };
            var results = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).PruneHeadsAsync(decision)));
            for (int s = 0; s < results.Length; s++) masked[s] = results[s].MaskedPerPiece;
            return (null, scores.Sum(r => (long)r.Scores.Sum(x => x.Length) * sizeof(double)));
        }
        if (spec.Pattern != RunOptions.Patterns.Unstructured)
        {
            // Rows, columns and heads rank units inside a tensor or layer, which lie whole on one shard.
            var results = await Task.WhenAll(plan.Shards.Select(s => Shard(s.Index).ApplyLocalAsync(new LocalRoundRequest
            {
                Round = round, Sparsity = target, TargetMasked = new long[s.Pieces.Count],
            })));
            for (int s = 0; s < results.Length; s++) masked[s] = results[s].MaskedPerPiece;
            return (null, 0);
        }

        var pieces = plan.Shards.SelectMany(s => s.Pieces.Select((p, i) => (Shard: s.Index, Index: i, Piece: p))).ToArray();
        var tensorOrder = plan.Prunable.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i, StringComparer.Ordinal);
        var local = plan.Shards.Select(s => Enumerable.Repeat(-1L, s.Pieces.Count).ToArray()).ToArray();
        var thresholds = plan.Shards.Select(s => new uint?[s.Pieces.Count]).ToArray();
        var ties = plan.Shards.Select(s => new long[s.Pieces.Count]).ToArray();
        uint? globalThreshold = null;

        for (int group = 0; group < plan.GroupElements.Length; group++)
        {
            token.ThrowIfCancellationRequested();
            var members = pieces.Where(p => p.Piece.Group == group)
                .OrderBy(p => tensorOrder[p.Piece.Tensor]).ThenBy(p => p.Piece.RowStart).ToArray();
            long goal = groupTargets?[group] ?? Counts.Target(target, plan.GroupElements[group]);
            long already = members.Sum(m => masked[m.Shard][m.Index]);
            long need = goal - already;
            if (need <= 0) continue;
            if (members.Length == 1)
            {
                local[members[0].Shard][members[0].Index] = goal;
                continue;
            }
            var shards = members.Select(m => m.Shard).Distinct().ToArray();
            var search = new GlobalThresholdSearch(need);
            while (!search.IsComplete)
            {
                var request = new HistogramRequest { Group = group, Level = search.Level, Prefix = search.Prefix };
                var histograms = await Task.WhenAll(shards.Select(s => Shard(s).HistogramAsync(request)));
                bytes += histograms.Sum(h => (long)h.Counts.Length * sizeof(long));
                // With bf16 scores everywhere the top digit is already exact: one round of messages, not two.
                search.Submit(RadixSelect.MergeHistograms(histograms.Select(h => h.Counts)), lowBitsZero: histograms.All(h => h.LowBitsZero));
            }
            uint threshold = search.ThresholdKey;
            var counts = await Task.WhenAll(shards.Select(s => Shard(s).CountAsync(group, threshold)));
            bytes += counts.Sum(c => (long)(c.Less.Length + c.Equal.Length) * sizeof(long));
            var countByShard = shards.Select((s, i) => (s, counts[i])).ToDictionary(x => x.s, x => x.Item2);
            var assigned = RadixSelect.AssignTies(members.Select(m => countByShard[m.Shard].Equal[m.Index]).ToArray(), search.TiesNeeded);
            for (int m = 0; m < members.Length; m++)
            {
                thresholds[members[m].Shard][members[m].Index] = threshold;
                ties[members[m].Shard][members[m].Index] = assigned[m];
            }
            if (spec.Scope == RunOptions.Scopes.Global) globalThreshold = threshold;
        }

        var calls = new List<Task<(int Shard, ShardRoundResult Result)>>();
        foreach (var s in plan.Shards)
        {
            int index = s.Index;
            if (local[index].Any(t => t >= 0))
                calls.Add(Tagged(index, Shard(index).ApplyLocalAsync(new LocalRoundRequest { Round = round, Sparsity = target, TargetMasked = local[index] })));
        }
        foreach (var r in await Task.WhenAll(calls)) masked[r.Shard] = r.Result.MaskedPerPiece;
        calls.Clear();
        foreach (var s in plan.Shards)
        {
            int index = s.Index;
            if (thresholds[index].Any(t => t is not null))
                calls.Add(Tagged(index, Shard(index).ApplyAsync(new MaskDecision { Round = round, Thresholds = thresholds[index], Ties = ties[index] })));
        }
        foreach (var r in await Task.WhenAll(calls)) masked[r.Shard] = r.Result.MaskedPerPiece;
        return (globalThreshold, bytes);

        static async Task<(int, ShardRoundResult)> Tagged(int shard, Task<ShardRoundResult> call) => (shard, await call);
    }
}
