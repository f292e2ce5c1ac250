using Shears.Contracts;

namespace Shears.Grains.Runs;

[GenerateSerializer]
public sealed class RunRegistryState
{
    [Id(0)] public List<string> Runs { get; set; } = [];
}

public sealed class RunRegistryGrain([PersistentState("registry", ShearsStorage.Name)] IPersistentState<RunRegistryState> state)
    : Grain, IRunRegistryGrain
{
    async Task IRunRegistryGrain.RegisterAsync(string runId)
    {
        if (state.State.Runs.Contains(runId)) return;
        state.State.Runs.Add(runId);
        await state.WriteStateAsync();
    }

    Task<IReadOnlyList<string>> IRunRegistryGrain.ListAsync() => Task.FromResult<IReadOnlyList<string>>(state.State.Runs.ToArray());
}
