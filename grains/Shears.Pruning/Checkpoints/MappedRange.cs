using System.IO.MemoryMappedFiles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// A read-only memory map of a byte range of a checkpoint file: the bytes are the page cache's own, so holding a
/// tensor this way costs no copy and no memory of the process's own, and pages come in as they are first read.
/// </summary>
public sealed unsafe class MappedRange : IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _pointer;

    private MappedRange(MemoryMappedFile file, MemoryMappedViewAccessor view, int length)
    {
        _file = file;
        _view = view;
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

    /// <summary>Maps bytes [<paramref name="byteStart"/>, + <paramref name="length"/>) of tensor <paramref name="t"/>'s data.</summary>
    public static MappedRange Map(CheckpointManifest m, TensorEntry t, long byteStart, int length)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(t);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        CheckpointReader.CheckRange(t, byteStart, length);
        string path = m.PathOf(t.FileName);
        MemoryMappedFile file;
        try
        {
            file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or IOException)
        {
            throw new IOException($"Cannot map '{path}' to read tensor '{t.Name}': {e.Message}", e);
        }
        try
        {
            // A zero-length view maps the whole file: map at least one byte.
            var view = file.CreateViewAccessor(t.FileOffset + byteStart, Math.Max(1, length), MemoryMappedFileAccess.Read);
            return new MappedRange(file, view, length);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_pointer == null) return;
        _pointer = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
