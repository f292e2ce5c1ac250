using System.Collections.Concurrent;
using System.Globalization;
using Orleans.Runtime;
using Shears.Contracts;
using Shears.Grains.Runs;
using Shears.Pruning.Checkpoints;

namespace Shears.Grains.Placement;

/// <summary>
/// What a shard is expected to hold in memory, from its plan alone: its pieces' bytes (mapped or copied; none for generated
/// weights) and masks (a bit per element); a pipeline stage also its tensors in fp32, and when it trains their gradients and AdamW's two moments;
/// a stage that calibrates (Wanda, SparseGPT, GPTQ, OWL, layer ranking) an fp64 Gram matrix per input width. Activations
/// and libtorch's workspace come on top: the budget a silo is given should leave room for them.
/// </summary>
public static class ShardMemory
{
    public static long Estimate(ShardPlan shard, StagePlan? stage, CheckpointManifest manifest, RunSpec spec)
    {
        ArgumentNullException.ThrowIfNull(shard);
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(spec);
        long bytes = 0, prunable = 0;
        foreach (var piece in shard.Pieces)
        {
            long elements = piece.RowCount * piece.RowElements;
            // Generated weights (--synthetic-weights) are never held: only their masks are.
            if (spec.SyntheticWeights is null) bytes += elements * manifest.Get(piece.Tensor).DType.ElementSize();
            bytes += (elements + 7) / 8;
            prunable += elements;
        }
        if (stage is null) return bytes;
        bytes += stage.Tensors.Sum(t => manifest.Get(t).ElementCount) * sizeof(float);
        if (spec.Trains) bytes += prunable * 3 * sizeof(float);
        if (spec.UsesCalibration)
            bytes += shard.Pieces.Select(p => InputWidth(manifest, p.Tensor)).Distinct().Sum(w => w * w * sizeof(double));
        return bytes;
    }

    // A decoder weight is stored [out, in]; an ONNX encoder's [in, out].
    private static long InputWidth(CheckpointManifest manifest, string tensor)
    {
        var shape = manifest.Get(tensor).Shape;
        if (shape.Length != 2) return 0;
        return manifest.OutputColumns.Contains(tensor) ? shape[0] : shape[1];
    }
}

/// <summary>
/// Places a run's shards within the worker silos' memory budgets: the largest shard first, each on the silo with the
/// most budget left (ties by silo order), so shards spread by free budget rather than one per silo in turn.
/// </summary>
public static class BudgetPlacement
{
    /// <returns>Per shard, the index of its silo in <paramref name="free"/>.</returns>
    /// <exception cref="RunRejectedException">A shard fits no silo: names the largest shard and the largest budget.</exception>
    public static int[] Assign(IReadOnlyList<long> needs, IReadOnlyList<(string Silo, long Free)> free, Func<int, string> describe)
    {
        ArgumentNullException.ThrowIfNull(needs);
        ArgumentNullException.ThrowIfNull(free);
        if (free.Count == 0) throw new RunRejectedException("no worker silo with a memory budget is in the cluster");
        var left = free.Select(f => f.Free).ToArray();
        var result = new int[needs.Count];
        foreach (int shard in Enumerable.Range(0, needs.Count).OrderByDescending(i => needs[i]).ThenBy(i => i))
        {
            int best = -1;
            for (int s = 0; s < left.Length; s++)
                if (left[s] >= needs[shard] && (best < 0 || left[s] > left[best])) best = s;
            if (best < 0)
            {
                int largest = Enumerable.Range(0, needs.Count).OrderByDescending(i => needs[i]).ThenBy(i => i).First();
                int roomiest = Enumerable.Range(0, free.Count).OrderByDescending(s => free[s].Free).ThenBy(s => s).First();
                string why = needs[largest] > free[roomiest].Free
                    ? $"shard {largest} ({describe(largest)}) needs about {Bytes(needs[largest])}, more than the largest free memory budget, {Bytes(free[roomiest].Free)} on silo {free[roomiest].Silo}"
                    : $"the shards need about {Bytes(needs.Sum())} in all (the largest, shard {largest} ({describe(largest)}), {Bytes(needs[largest])}); " +
                      $"the workers' free budgets ({string.Join(", ", free.Select(f => $"{f.Silo}: {Bytes(f.Free)}"))}) cannot hold them" +
                      // Room in all, but not in pieces of the shards' sizes: say which shard was left without a silo.
                      (needs.Sum() <= free.Sum(f => f.Free)
                          ? $"; together they would fit, but placed largest first on the silo with the most left, shard {shard} ({describe(shard)}), " +
                            $"about {Bytes(needs[shard])}, finds no silo with room for it: the most left on one is {Bytes(left.Max())}"
                          : "");
                throw new RunRejectedException($"the run does not fit the cluster's memory budgets: {why}; give the silos larger --memory-budget, add silos, or prune fewer tensors");
            }
            left[best] -= needs[shard];
            result[shard] = best;
        }
        return result;
    }

    public static string Bytes(long bytes) => bytes >= 1L << 30
        ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB ({bytes:N0} bytes)")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB ({bytes:N0} bytes)");
}

/// <summary>
/// This silo's view of the cluster's memory budgets (each silo's --memory-budget travels as silo metadata), the memory
/// the runs coordinated here have placed on each silo, and where each of their shards is to go: the shard placement
/// director reads the hints when it activates a shard, which the coordinator's first call to it makes happen here.
/// </summary>
public sealed class ShardBudgets(IServiceProvider services, SiloRoles roles)
{
    public const string MetadataKey = "shears-memory-budget";

    private readonly ConcurrentDictionary<string, SiloAddress> _hints = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (SiloAddress Silo, long Bytes)[]> _reserved = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>The silo that the shard grain with this key should be activated on, if a run placed it.</summary>
    public SiloAddress? Hint(string grainKey) => _hints.GetValueOrDefault(grainKey);

    /// <summary>The active worker silos whose budget is known here, in address order.</summary>
    public IReadOnlyList<(SiloAddress Silo, long Budget)> Workers()
    {
        var membership = services.GetService(typeof(Orleans.Runtime.IClusterMembershipService)) as Orleans.Runtime.IClusterMembershipService;
        var active = membership?.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress) ?? [];
        return active.Where(s => roles.Role(s) is not null && roles.HoldsWeights(s))
            .Select(s => (Silo: s, Budget: roles.Metadata(s, MetadataKey) is { } text && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long b) ? b : -1))
            .Where(x => x.Budget >= 0)
            .OrderBy(x => x.Silo.ToParsableString(), StringComparer.Ordinal).ToArray();
    }

    /// <summary>
    /// Places the run's shards (<paramref name="needs"/> bytes each) within what the workers' budgets leave after the
    /// other runs coordinated here, records the hints and the reservation; throws <see cref="RunRejectedException"/>
    /// when they do not fit. Returns false (nothing placed) when no silo's budget is known here yet.
    /// </summary>
    public bool Place(string runId, IReadOnlyList<long> needs, Func<int, string> describe)
    {
        lock (_gate)
        {
            var workers = Workers();
            if (workers.Count == 0) return false;
            var others = _reserved.Where(r => r.Key != runId).SelectMany(r => r.Value).ToArray();
            var free = workers.Select(w => (w.Silo.ToString(), w.Budget - others.Where(o => o.Silo.Equals(w.Silo)).Sum(o => o.Bytes))).ToArray();
            var assignment = BudgetPlacement.Assign(needs, free, describe);
            for (int i = 0; i < needs.Count; i++) _hints[$"{runId}/{i}"] = workers[assignment[i]].Silo;
            _reserved[runId] = needs.Select((n, i) => (workers[assignment[i]].Silo, n)).ToArray();
            return true;
        }
    }

    /// <summary>What the workers' budgets leave, together, after the other runs coordinated here; long.MaxValue when none is known.</summary>
    public long FreeTotal(string runId)
    {
        lock (_gate)
        {
            var workers = Workers();
            if (workers.Count == 0) return long.MaxValue;
            long reserved = _reserved.Where(r => r.Key != runId).SelectMany(r => r.Value).Sum(o => o.Bytes);
            return workers.Sum(w => w.Budget) - reserved;
        }
    }

    /// <summary>Checks that the run would fit now, placing nothing (a run is refused before it starts).</summary>
    public void Check(string runId, IReadOnlyList<long> needs, Func<int, string> describe)
    {
        lock (_gate)
        {
            var workers = Workers();
            if (workers.Count == 0) return;
            var others = _reserved.Where(r => r.Key != runId).SelectMany(r => r.Value).ToArray();
            BudgetPlacement.Assign(needs, workers.Select(w => (w.Silo.ToString(), w.Budget - others.Where(o => o.Silo.Equals(w.Silo)).Sum(o => o.Bytes))).ToArray(), describe);
        }
    }

    /// <summary>The run's shards are gone (it finished): its reservation and hints go too.</summary>
    public void Release(string runId)
    {
        _reserved.TryRemove(runId, out _);
        foreach (string key in _hints.Keys.Where(k => k.StartsWith(runId + "/", StringComparison.Ordinal)).ToArray()) _hints.TryRemove(key, out _);
    }

    /// <summary>--memory-budget's default: this fraction of the memory the process may use (the machine's, or its cgroup's limit).</summary>
    public const double DefaultFraction = 0.8;

    public static long DefaultBudget() => (long)(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes * DefaultFraction);

    /// <summary>
    /// A memory budget: bytes, with an optional binary suffix (K, M, G, T; KiB … TiB too), or a percentage of the memory
    /// the process may use (the machine's, or its cgroup's limit).
    /// </summary>
    public static long Parse(string text, string option)
    {
        string t = text.Trim();
        if (t.EndsWith('%'))
        {
            if (double.TryParse(t[..^1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double percent) && percent > 0 && percent <= 100)
                return (long)(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes * percent / 100);
            throw new ArgumentException($"{option}: a percentage must lie in (0, 100], got '{text}'");
        }
        int shift = 0;
        foreach (var (suffix, bits) in new[] { ("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40), ("K", 10), ("M", 20), ("G", 30), ("T", 40) })
        {
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)) { t = t[..^suffix.Length]; shift = bits; break; }
        }
        if (!double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value) || !(value > 0) || value * Math.Pow(2, shift) >= long.MaxValue)
            throw new ArgumentException($"{option} must be a positive number of bytes (suffixes K, M, G, T) or a percentage, got '{text}'");
        return (long)(value * Math.Pow(2, shift));
    }
}
