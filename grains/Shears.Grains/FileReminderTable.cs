using Orleans.Serialization;

namespace Shears.Grains;

/// <summary>
/// Orleans' reminder table as files in a folder that every silo of the cluster reaches, beside
/// <see cref="FileGrainStorage"/>'s state: what silos clustered without Redis use, so that the reminder that keeps a run
/// going outlives the silo that registered it (Orleans' in-memory table lives in a grain that a lost silo can take along).
/// One file per reminder, each with its version (the ETag) at its head; every operation holds the table's one lock
/// file, which other processes respect.
/// </summary>
public sealed class FileReminderTable : IReminderTable
{
    private const string Extension = ".reminder";
    private readonly string _directory;
    private readonly Serializer _serializer;

    public FileReminderTable(string directory, Serializer serializer)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        _directory = Path.Combine(Path.GetFullPath(directory), "reminders");
        _serializer = serializer;
        try
        {
            Directory.CreateDirectory(_directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot use '{_directory}' for the runs' reminders: {e.Message}", e);
        }
    }

    private string LockPath => Path.Combine(_directory, "table");

    private string PathOf(GrainId grainId, string reminderName) =>
        Path.Combine(_directory, Uri.EscapeDataString(grainId.ToString()) + "." + Uri.EscapeDataString(reminderName) + Extension);

    public Task<ReminderTableData> ReadRows(GrainId grainId)
    {
        using (FileGrainStorage.Lock(LockPath))
            return Task.FromResult(new ReminderTableData(ReadAll().Where(e => e.GrainId == grainId)));
    }

    /// <summary>The rows whose grain hashes into (begin, end] on Orleans' ring; when begin is at least end the range wraps around.</summary>
    public Task<ReminderTableData> ReadRows(uint begin, uint end)
    {
        using (FileGrainStorage.Lock(LockPath))
            return Task.FromResult(new ReminderTableData(ReadAll().Where(e => InRange(e.GrainId.GetUniformHashCode(), begin, end))));
    }

    internal static bool InRange(uint hash, uint begin, uint end) => begin < end ? hash > begin && hash <= end : hash > begin || hash <= end;

    public Task<ReminderEntry?> ReadRow(GrainId grainId, string reminderName)
    {
        using (FileGrainStorage.Lock(LockPath))
            return Task.FromResult(Read(PathOf(grainId, reminderName)));
    }

    public Task<string?> UpsertRow(ReminderEntry entry)
    {
        string path = PathOf(entry.GrainId, entry.ReminderName);
        using (FileGrainStorage.Lock(LockPath))
        {
            // An upsert replaces whatever is there (Orleans asks no ETag of it) and makes a new version.
            long version = Read(path) is { ETag: { } etag } ? long.Parse(etag) + 1 : 1;
            byte[] bytes = _serializer.SerializeToArray(entry);
            string temp = path + ".tmp";
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                file.Write(BitConverter.GetBytes(version));
                file.Write(bytes);
            }
            File.Move(temp, path, overwrite: true);
            entry.ETag = version.ToString();
            return Task.FromResult<string?>(entry.ETag);
        }
    }

    public Task<bool> RemoveRow(GrainId grainId, string reminderName, string eTag)
    {
        string path = PathOf(grainId, reminderName);
        using (FileGrainStorage.Lock(LockPath))
        {
            if (Read(path) is not { } stored || stored.ETag != eTag) return Task.FromResult(false);
            File.Delete(path);
            return Task.FromResult(true);
        }
    }

    public Task TestOnlyClearTable()
    {
        using (FileGrainStorage.Lock(LockPath))
            foreach (string path in Directory.EnumerateFiles(_directory, "*" + Extension)) File.Delete(path);
        return Task.CompletedTask;
    }

    private IEnumerable<ReminderEntry> ReadAll() =>
        Directory.EnumerateFiles(_directory, "*" + Extension).Select(Read).OfType<ReminderEntry>().ToArray();

    private ReminderEntry? Read(string path)
    {
        if (!File.Exists(path)) return null;
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < sizeof(long)) throw new InvalidDataException($"'{path}' is not a Shears reminder file: {bytes.Length} bytes");
        var entry = _serializer.Deserialize<ReminderEntry>(bytes[sizeof(long)..]) ?? throw new InvalidDataException($"'{path}' holds no reminder");
        entry.ETag = BitConverter.ToInt64(bytes).ToString();
        return entry;
    }
}
