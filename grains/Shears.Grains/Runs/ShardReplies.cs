using Shears.Contracts;

namespace Shears.Grains.Runs;

/// <summary>The coordinator's side of shard work that may outlast a call.</summary>
internal static class ShardReplies
{
    /// <summary>The call's result: at once when the work ended within the call, else by polling its ticket with short calls.</summary>
    public static async Task<T> Complete<T>(this Task<ShardReply<T>> call, IShardGrain shard, CancellationToken token = default)
    {
        var reply = await call;
        while (!reply.Done)
        {
            token.ThrowIfCancellationRequested();
            reply = await shard.PollAsync<T>(reply.Ticket, PipelineDriver.PollWait);
        }
        return reply.Result!;
    }
}
