using System.IO.MemoryMappedFiles;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// A read-only memory map of a byte range of a checkpoint file: the bytes are the page cache's own, so holding a
/// tensor this way costs no copy and no memory of the process's own, and pages come in as they are first read.
/// </summary>
/// <remarks>
/// The map shows the file as it is: a checkpoint rewritten in place while a run holds it would change weights under
/// the run, or, cut shorter, fault the process on its next read. <see cref="CheckUnchanged"/> compares the mapped
/// file's length and modification time with those it had when mapped; shards call it at every step that reads the
/// weights, so such a run fails naming the file instead of writing an output of two checkpoints' weights. (A file
/// replaced by a new one under the same name is no harm: the map keeps the old one's bytes.)
/// </remarks>
public sealed unsafe class MappedRange : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly SafeFileHandle _handle;
    private readonly string _path;
    private readonly string _tensor;
    private readonly long _fileLength;
    private readonly DateTime _modified;
    private byte* _pointer;

    private MappedRange(MemoryMappedFile file, MemoryMappedViewAccessor view, int length, SafeFileHandle handle, string path, string tensor, long fileLength, DateTime modified)
    {
        _file = file;
        _view = view;
        _handle = handle;
        _path = path;
        _tensor = tensor;
        _fileLength = fileLength;
        _modified = modified;
        Length = length;
        byte* start = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
        _pointer = start + view.PointerOffset;
    }

    /// <summary>Bytes in the range (a range is at most 2 GiB, as a tensor piece is).</summary>
    public int Length { get; }

    /// <summary>The mapped bytes; valid until <see cref="Dispose"/>.</summary>
    public ReadOnlySpan<byte> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == null, this);
            return new ReadOnlySpan<byte>(_pointer, Length);
        }
    }

    /// <summary>
    /// Drops the range's pages from this process's resident memory (madvise MADV_DONTNEED on Linux; elsewhere nothing):
    /// the bytes stay in the page cache and the next read maps them in again. A shard whose model stage holds an fp32
    /// copy of its weights calls this once it has read them, so that it does not hold both at once.
    /// </summary>
    public void ReleaseResident()
    {
        if (!OperatingSystem.IsLinux() || _pointer == null || Length == 0) return;
        long page = Environment.SystemPageSize;
        long start = (long)_pointer / page * page;
        long end = ((long)_pointer + Length + page - 1) / page * page;
        // Read-only shared file pages: discarding them loses nothing, and a failure only leaves them resident.
        _ = Madvise((IntPtr)start, (UIntPtr)(ulong)(end - start), DontNeed);
    }

    private const int DontNeed = 4; // MADV_DONTNEED

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static extern int Madvise(IntPtr address, UIntPtr length, int advice);

    /// <summary>Maps bytes [<paramref name="byteStart"/>, + <paramref name="length"/>) of tensor <paramref name="t"/>'s data.</summary>
    public static MappedRange Map(CheckpointManifest m, TensorEntry t, long byteStart, int length)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(t);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        CheckpointReader.CheckRange(t, byteStart, length);
        string path = m.PathOf(t.FileName);
        SafeFileHandle handle;
        MemoryMappedFile file;
        long fileLength;
        DateTime modified;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException)
        {
            throw new IOException($"Cannot map '{path}' to read tensor '{t.Name}': {e.Message}", e);
        }
        try
        {
            // Length and time from the handle that is mapped: the file the map shows, whatever its name points to later.
            fileLength = RandomAccess.GetLength(handle);
            modified = File.GetLastWriteTimeUtc(handle);
            file = MemoryMappedFile.CreateFromFile(handle, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            handle.Dispose();
            throw new IOException($"Cannot map '{path}' to read tensor '{t.Name}': {e.Message}", e);
        }
        try
        {
            // A zero-length view maps the whole file: map at least one byte.
            var view = file.CreateViewAccessor(t.FileOffset + byteStart, Math.Max(1, length), MemoryMappedFileAccess.Read);
            return new MappedRange(file, view, length, handle, path, t.Name, fileLength, modified);
        }
        catch
        {
            file.Dispose();
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Throws <see cref="CheckpointChangedException"/> when the mapped file's length or modification time differ from
    /// when it was mapped.
    /// </summary>
    public void CheckUnchanged()
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        long length = RandomAccess.GetLength(_handle);
        DateTime modified = File.GetLastWriteTimeUtc(_handle);
        if (length != _fileLength || modified != _modified)
        {
            throw new CheckpointChangedException(_path, _tensor,
                length != _fileLength
                    ? $"its length went from {_fileLength} to {length} bytes"
                    : $"it was modified at {modified:O} (it was last modified at {_modified:O} when the run read it)");
        }
    }

    public void Dispose()
    {
        if (_pointer == null) return;
        _pointer = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
        _handle.Dispose();
    }
}
