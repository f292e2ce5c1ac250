using Orleans.Metadata;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace Shears.Grains.Placement;

/// <summary>
/// Places shard grains where their run put them by the silos' memory budgets (<see cref="ShardBudgets"/>); without such a
/// placement (no budget known yet, or the chosen silo gone), spreads them evenly over the silos that hold weights: shard
/// i of a run goes to the (i mod n)-th worker silo in address order, and a re-activated shard lands on a live one.
/// </summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class ShardPlacement : PlacementStrategy
{
    public static readonly ShardPlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ShardPlacementAttribute() : PlacementAttribute(ShardPlacement.Instance);

public sealed class ShardPlacementDirector(SiloRoles roles, ShardBudgets budgets) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        // A run placed its shards by the silos' memory budgets (ShardBudgets): the silo chosen, while it is there.
        if (budgets.Hint(target.GrainIdentity.Key.ToString() ?? "") is { } hinted && compatible.Contains(hinted)) return Task.FromResult(hinted);
        // Silos whose role is not known yet (their metadata has not arrived) are used only when no role is known.
        var known = compatible.Where(s => roles.Role(s) is not null).ToArray();
        var workers = (known.Length > 0 ? known.Where(roles.HoldsWeights) : compatible)
            .OrderBy(s => s.ToParsableString(), StringComparer.Ordinal).ToArray();
        if (workers.Length == 0)
            throw new OrleansException("no worker silo is available to hold shards (every silo runs with --role coordinator)");
        string key = target.GrainIdentity.Key.ToString() ?? "";
        int slash = key.LastIndexOf('/');
        int index = slash >= 0 && int.TryParse(key[(slash + 1)..], out int i) ? i : Math.Abs(key.GetHashCode());
        return Task.FromResult(workers[index % workers.Length]);
    }
}

/// <summary>Which silos hold weights, from the silo metadata key "shears-role" (worker, coordinator or all).</summary>
public sealed class SiloRoles(IServiceProvider services)
{
    public const string MetadataKey = "shears-role";

    public bool HoldsWeights(SiloAddress silo) => Role(silo) is not "coordinator";

    public bool RunsCoordinators(SiloAddress silo) => Role(silo) is not "worker";

    /// <summary>The silo's role, or null while its metadata has not reached this silo.</summary>
    public string? Role(SiloAddress silo) => Metadata(silo, MetadataKey);

    /// <summary>A value of the silo's metadata, or null while it has not reached this silo.</summary>
    public string? Metadata(SiloAddress silo, string key)
    {
        var cache = services.GetService(typeof(Orleans.Runtime.MembershipService.SiloMetadata.ISiloMetadataCache))
            as Orleans.Runtime.MembershipService.SiloMetadata.ISiloMetadataCache;
        var metadata = cache?.GetSiloMetadata(silo);
        return metadata is not null && metadata.Metadata.TryGetValue(key, out var value) ? value : null;
    }
}

/// <summary>Places run coordinators on silos whose role runs them (coordinator or all); any silo when none does.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class CoordinatorPlacement : PlacementStrategy
{
    public static readonly CoordinatorPlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class CoordinatorPlacementAttribute() : PlacementAttribute(CoordinatorPlacement.Instance);

public sealed class CoordinatorPlacementDirector(SiloRoles roles) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        var coordinators = compatible.Where(s => roles.Role(s) is not null && roles.RunsCoordinators(s)).ToArray();
        var pool = coordinators.Length > 0 ? coordinators : compatible;
        // Prefer the caller's silo when it qualifies: no extra hop for the client's gateway.
        var local = context.LocalSilo;
        if (pool.Contains(local)) return Task.FromResult(local);
        return Task.FromResult(pool[Random.Shared.Next(pool.Length)]);
    }
}
