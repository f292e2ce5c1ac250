using Shears.Contracts;

namespace Shears.Grains.Shards;

/// <summary>
/// Runs before a stage works on a micro-batch, and before a shard writes its part of the output: a hook for
/// diagnostics and for tests that make a stage slow or failing. Silos register none by default.
/// </summary>
public interface IStageInterceptor
{
    /// <param name="shard">The grain key of the stage's shard ("runId/index").</param>
    Task BeforeAsync(string shard, StagePlan stage, StageMessage message);

    /// <param name="shard">The grain key of the shard ("runId/index").</param>
    Task BeforeWriteAsync(string shard) => Task.CompletedTask;
}
