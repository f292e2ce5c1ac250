using Shears.Contracts;

namespace Shears.Grains.Shards;

/// <summary>
/// Work of one shard grain that may outlast a call: a call waits a little for it, then hands out a ticket that the
/// caller polls. The work runs in the activation (its tensor parts on the compute executor) whether or not anyone waits.
/// </summary>
/// <param name="callWait">How long a call waits for its work before it answers with a ticket.</param>
internal sealed class ShardJobs(TimeSpan callWait)
{
    private readonly Dictionary<long, Task> _running = [];
    private long _next;

    public async Task<ShardReply<T>> Run<T>(Task<T> work)
    {
        if (!work.IsCompleted) await Task.WhenAny(work, Task.Delay(callWait));
        if (work.IsCompleted) return new ShardReply<T> { Done = true, Result = await work };
        long ticket = ++_next;
        _running[ticket] = work;
        return new ShardReply<T> { Ticket = ticket };
    }

    public async Task<ShardReply<T>> Poll<T>(long ticket, TimeSpan wait, string shard)
    {
        if (!_running.TryGetValue(ticket, out var task))
            throw new ShardNotLoadedException($"shard {shard} has no work {ticket} (it was re-activated or loaded again)");
        if (!task.IsCompleted) await Task.WhenAny(task, Task.Delay(wait));
        if (!task.IsCompleted) return new ShardReply<T> { Ticket = ticket };
        _running.Remove(ticket);
        return new ShardReply<T> { Done = true, Result = await (Task<T>)task };
    }

    /// <summary>Forgets every ticket (the shard is loaded again or released): their work belongs to an abandoned attempt.</summary>
    public void Clear() => _running.Clear();
}
