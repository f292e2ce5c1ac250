using Orleans.Serialization;
using Orleans.Storage;

namespace Shears.Grains;

/// <summary>
/// Grain state (the runs' state) as files in a folder that every silo of the cluster reaches: what silos clustered
/// without Redis (on one machine, or over a shared filesystem) use, so a run's state outlives the silo that wrote it.
/// One file per grain and state; each write goes to a temporary file renamed over the old one, under a lock file
/// that other processes respect, and checks the ETag (a version number kept at the head of the file) as stores do.
/// </summary>
public sealed class FileGrainStorage : IGrainStorage
{
    private readonly string _directory;
    private readonly Serializer _serializer;

    public FileGrainStorage(string directory, Serializer serializer)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _directory = Path.GetFullPath(directory);
        _serializer = serializer;
        try
        {
            Directory.CreateDirectory(_directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot use '{_directory}' for the runs' state: {e.Message}", e);
        }
    }

    private string PathOf(string stateName, GrainId grainId) =>
        Path.Combine(_directory, Uri.EscapeDataString(stateName) + "." + Uri.EscapeDataString(grainId.ToString()) + ".state");

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        using (Lock(path))
        {
            if (Read(path) is { } stored)
            {
                grainState.State = _serializer.Deserialize<T>(stored.State);
                (grainState.ETag, grainState.RecordExists) = (stored.Version.ToString(), true);
                return Task.CompletedTask;
            }
        }
        grainState.State = Activator.CreateInstance<T>();
        (grainState.ETag, grainState.RecordExists) = (null, false);
        return Task.CompletedTask;
    }

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        using (Lock(path))
        {
            long version = Read(path)?.Version ?? 0;
            string? stored = version == 0 ? null : version.ToString();
            if (stored != grainState.ETag)
                throw new InconsistentStateException($"'{path}' holds version {stored ?? "none"}, the grain wrote after {grainState.ETag ?? "none"}", stored, grainState.ETag);
            byte[] state = _serializer.SerializeToArray(grainState.State);
            string temp = path + ".tmp";
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                file.Write(BitConverter.GetBytes(version + 1));
                file.Write(state);
            }
            // Not flushed to disk: a silo process that dies leaves its writes in the page cache for the others, and the
            // shards' mask files beside the output are not flushed either; a flush here would cost a disk round trip at
            // every step of every round and still not make a run survive the machine's own crash.
            File.Move(temp, path, overwrite: true);
            (grainState.ETag, grainState.RecordExists) = ((version + 1).ToString(), true);
        }
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        string path = PathOf(stateName, grainId);
        using (Lock(path)) File.Delete(path);
        grainState.State = Activator.CreateInstance<T>();
        (grainState.ETag, grainState.RecordExists) = (null, false);
        return Task.CompletedTask;
    }

    private static (long Version, byte[] State)? Read(string path)
    {
        if (!File.Exists(path)) return null;
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < sizeof(long)) throw new InvalidDataException($"'{path}' is not a Shears state file: {bytes.Length} bytes");
        return (BitConverter.ToInt64(bytes), bytes[sizeof(long)..]);
    }

    // FileShare.None takes an exclusive advisory lock that other .NET processes honour; a writer waits its turn.
    // FileReminderTable takes the same kind of lock.
    internal static FileStream Lock(string path)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return new FileStream(path + ".lock", FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 200)
            {
                Thread.Sleep(10);
            }
        }
    }
}
