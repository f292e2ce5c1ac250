using Shears.Pruning.Selection;

namespace Shears.Engine.Rounds;

/// <summary>
/// Unstructured selection by score over selection groups (one global group, or one per tensor for layer and
/// progressive scope): a group lying on one piece is decided by its shard alone; the others by an exact distributed
/// radix selection of the threshold, ties shared out by global position. The searches of all groups advance level by
/// level together, so each level asks every shard once, for all its groups.
/// </summary>
public sealed class ExactSelectionRound(RunLayout layout, IShardSet shards, bool global) : IRound
{
    private sealed record Member(int Shard, int Index);

    private sealed class GroupSearch(int group, Member[] members, long need)
    {
        public int Group { get; } = group;
        public Member[] Members { get; } = members;
        public int[] Shards { get; } = members.Select(m => m.Shard).Distinct().ToArray();
        public GlobalThresholdSearch Search { get; } = new(need);
    }

    public async Task<RoundOutcome> RunAsync(RoundContext round, CancellationToken token)
    {
        var masked = round.Masked;
        var local = layout.Shards.Select(s => Enumerable.Repeat(-1L, s.Count).ToArray()).ToArray();
        var searches = new List<GroupSearch>();
        foreach (var (group, members) in Groups())
        {
            long goal = round.GroupTargets?[group] ?? Counts.Target(round.Target, layout.GroupElements[group]);
            long need = goal - members.Sum(m => masked[m.Shard][m.Index]);
            if (need <= 0) continue;
            if (members.Length == 1) local[members[0].Shard][members[0].Index] = goal;
            else searches.Add(new GroupSearch(group, members, need));
        }

        long bytes = 0;
        for (var open = searches.Where(s => !s.Search.IsComplete).ToArray(); open.Length > 0; open = open.Where(s => !s.Search.IsComplete).ToArray())
        {
            token.ThrowIfCancellationRequested();
            bytes += await MergeHistogramsAsync(open);
        }

        var thresholds = layout.Shards.Select(s => new uint?[s.Count]).ToArray();
        var ties = layout.Shards.Select(s => new long[s.Count]).ToArray();
        uint? globalThreshold = null;
        if (searches.Count > 0)
        {
            token.ThrowIfCancellationRequested();
            var counts = await AskEachShard(searches, g => new CountQuery(g.Group, g.Search.ThresholdKey), shards.CountsAsync);
            foreach (var g in searches)
            {
                var byShard = g.Shards.Zip(counts[g]).ToDictionary(x => x.First, x => x.Second);
                bytes += byShard.Values.Sum(c => (long)(c.Less.Length + c.Equal.Length) * sizeof(long));
                var assigned = RadixSelect.AssignTies(g.Members.Select(m => byShard[m.Shard].Equal[m.Index]).ToArray(), g.Search.TiesNeeded);
                for (int m = 0; m < g.Members.Length; m++)
                {
                    thresholds[g.Members[m].Shard][g.Members[m].Index] = g.Search.ThresholdKey;
                    ties[g.Members[m].Shard][g.Members[m].Index] = assigned[m];
                }
                if (global) globalThreshold = g.Search.ThresholdKey;
            }
        }

        // Groups on one piece first, then the thresholds: each call reports every piece of its shard, and the later
        // report is the one that holds.
        await ForShards(s => local[s].Any(t => t >= 0), s => shards.ApplyLocalAsync(s, new LocalDecision(round.Round, round.Target, local[s])), masked);
        await ForShards(s => thresholds[s].Any(t => t is not null), s => shards.ApplyAsync(s, new ThresholdDecision(round.Round, thresholds[s], ties[s])), masked);
        return new RoundOutcome(globalThreshold, bytes);
    }

    /// <summary>
    /// Asks every shard for the histograms of its open groups and adds each reply into its group's sum as it arrives, so
    /// the coordinator holds one histogram per group and the replies in flight, not one per shard and group; then submits
    /// the sums. Returns the bytes received.
    /// </summary>
    private async Task<long> MergeHistogramsAsync(IReadOnlyList<GroupSearch> open)
    {
        var sums = open.ToDictionary(g => g, _ => new long[RadixSelect.Buckets]);
        var lowBitsZero = open.ToDictionary(g => g, _ => true);
        long bytes = 0;
        var gate = new object();
        await Task.WhenAll(PerShard(open).Select(async p =>
        {
            var got = await shards.HistogramsAsync(p.Shard, p.Groups.Select(g => new HistogramQuery(g.Group, g.Search.Level, g.Search.Prefix)).ToArray());
            if (got.Count != p.Groups.Length) throw new InvalidOperationException($"shard {p.Shard} answered {got.Count} of {p.Groups.Length} queries");
            lock (gate)
            {
                for (int i = 0; i < got.Count; i++)
                {
                    var (sum, h) = (sums[p.Groups[i]], got[i]);
                    if (h.Counts.Length != sum.Length) throw new ArgumentException($"shard {p.Shard}: a histogram has {sum.Length} buckets, got {h.Counts.Length}");
                    for (int b = 0; b < sum.Length; b++) sum[b] += h.Counts[b];
                    lowBitsZero[p.Groups[i]] &= h.LowBitsZero;
                    bytes += (long)h.Counts.Length * sizeof(long);
                }
            }
        }));
        // With bf16 scores everywhere the top digit is already exact: one level of messages, not two.
        foreach (var g in open) g.Search.Submit(sums[g], lowBitsZero: lowBitsZero[g]);
        return bytes;
    }

    private static (int Shard, GroupSearch[] Groups)[] PerShard(IReadOnlyList<GroupSearch> groups) =>
        groups.SelectMany(g => g.Shards.Select(s => (Shard: s, Group: g)))
            .GroupBy(x => x.Shard).Select(x => (Shard: x.Key, Groups: x.Select(y => y.Group).ToArray())).ToArray();

    /// <summary>Selection groups with their pieces in global position order (tensor order, then row start).</summary>
    private IEnumerable<(int Group, Member[] Members)> Groups()
    {
        var pieces = layout.Shards.SelectMany((pieces, s) => pieces.Select((p, i) => (Member: new Member(s, i), Piece: p))).ToArray();
        for (int group = 0; group < layout.GroupElements.Count; group++)
            yield return (group, pieces.Where(p => p.Piece.Group == group)
                .OrderBy(p => layout.TensorOrder[p.Piece.Tensor]).ThenBy(p => p.Piece.RowStart).Select(p => p.Member).ToArray());
    }

    /// <summary>
    /// One call per shard carrying the queries of every group it holds; the answers come back per group, in the order
    /// of the group's shards.
    /// </summary>
    private static async Task<Dictionary<GroupSearch, List<TAnswer>>> AskEachShard<TQuery, TAnswer>(
        IReadOnlyList<GroupSearch> groups, Func<GroupSearch, TQuery> query, Func<int, IReadOnlyList<TQuery>, Task<IReadOnlyList<TAnswer>>> call)
    {
        var perShard = PerShard(groups);
        var replies = await Task.WhenAll(perShard.Select(p => call(p.Shard, p.Groups.Select(query).ToArray())));
        var answers = groups.ToDictionary(g => g, _ => new List<TAnswer>());
        var byShard = perShard.Select((p, i) => (p, replies[i])).ToDictionary(x => x.p.Shard, x => (x.p.Groups, Replies: x.Item2));
        foreach (var g in groups)
            foreach (int s in g.Shards)
            {
                var (asked, got) = byShard[s];
                if (got.Count != asked.Length) throw new InvalidOperationException($"shard {s} answered {got.Count} of {asked.Length} queries");
                answers[g].Add(got[Array.IndexOf(asked, g)]);
            }
        return answers;
    }

    private async Task ForShards(Func<int, bool> asked, Func<int, Task<long[]>> call, long[][] masked)
    {
        var calls = Enumerable.Range(0, layout.Shards.Count).Where(asked).Select(async s => (Shard: s, Masked: await call(s))).ToArray();
        foreach (var (shard, result) in await Task.WhenAll(calls)) masked[shard] = result;
    }
}
