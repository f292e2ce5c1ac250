using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Writes a checkpoint in the input's own layout: the same files, headers and offsets, with the data
/// regions filled tensor by tensor by positional writes (several processes may fill one file at once).
/// </summary>
public static class CheckpointOutput
{
    /// <summary>The largest piece a copy moves at once.</summary>
    public const int CopyChunkBytes = 16 * 1024 * 1024;

    /// <summary>
    /// Creates every safetensors file of <paramref name="input"/> in <paramref name="outDir"/> with the same
    /// name, its header copied verbatim and its full length (data to be written); copies the index and the
    /// companion files byte for byte. An ONNX model's tensors sit between protobuf bytes: every byte is copied except
    /// the ranges of <paramref name="writtenElsewhere"/> (the tensors the shards write), so that no pruned weight is
    /// copied here only to be overwritten.
    /// </summary>
    public static void CreateLayout(CheckpointManifest input, string outDir, IReadOnlySet<string>? writtenElsewhere = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        var outRoot = Path.GetFullPath(outDir);
        if (string.Equals(Path.TrimEndingDirectorySeparator(outRoot), Path.TrimEndingDirectorySeparator(Path.GetFullPath(input.Root)), StringComparison.Ordinal))
        {
            throw new ArgumentException($"The output directory '{outRoot}' is the input checkpoint's own directory.", nameof(outDir));
        }
        Directory.CreateDirectory(outRoot);

        foreach (var file in input.Files)
        {
            var inPath = input.PathOf(file.FileName);
            if (input.Format == CheckpointFormat.Onnx)
            {
                CopyAllBut(input, file.FileName, Path.Combine(outRoot, file.FileName), writtenElsewhere ?? new HashSet<string>());
                continue;
            }
            var header = GC.AllocateUninitializedArray<byte>(checked((int)file.HeaderBytes));
            using (var source = CheckpointReader.OpenForRead(inPath, null))
            {
                CheckpointReader.ReadExactly(source, header, 0, inPath, null);
            }

            var outPath = Path.Combine(outRoot, file.FileName);
            Directory.CreateDirectory(Path.GetDirectoryName(outPath)!);
            using var target = File.OpenHandle(outPath, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
            RandomAccess.Write(target, header, 0);
            RandomAccess.SetLength(target, file.FileLength);
        }

        if (input.IndexFileName is { } index)
        {
            File.Copy(input.PathOf(index), Path.Combine(outRoot, index), overwrite: true);
        }
        foreach (var companion in input.CompanionFiles)
        {
            File.Copy(input.PathOf(companion), Path.Combine(outRoot, companion), overwrite: true);
        }
    }

    /// <summary>Copies file <paramref name="fileName"/> to <paramref name="outPath"/> at its full length, leaving the byte ranges of the skipped tensors unwritten.</summary>
    private static void CopyAllBut(CheckpointManifest input, string fileName, string outPath, IReadOnlySet<string> skipped)
    {
        var inPath = input.PathOf(fileName);
        using var source = CheckpointReader.OpenForRead(inPath, null);
        long length = RandomAccess.GetLength(source);
        var holes = input.Tensors.Where(t => t.FileName == fileName && skipped.Contains(t.Name) && t.ByteLength > 0)
            .Select(t => (Start: t.FileOffset, End: t.FileOffset + t.ByteLength)).OrderBy(h => h.Start).ToArray();
        Directory.CreateDirectory(Path.GetDirectoryName(outPath)!);
        using var target = File.OpenHandle(outPath, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.SetLength(target, length);
        long at = 0;
        foreach (var (start, end) in holes.Append((Start: length, End: length)))
        {
            if (start > at) CopyRange(source, target, at, start - at, inPath);
            at = Math.Max(at, end);
        }
    }

    private static void CopyRange(SafeFileHandle source, SafeFileHandle target, long offset, long length, string inPath)
    {
        long copied = KernelCopy.Copy(source, target, offset, length);
        if (copied == length) return;
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyChunkBytes, length - copied));
        try
        {
            for (long done = copied; done < length;)
            {
                var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - done));
                CheckpointReader.ReadExactly(source, chunk, offset + done, inPath, null);
                RandomAccess.Write(target, (ReadOnlySpan<byte>)chunk, offset + done);
                done += chunk.Length;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Writes the whole tensor into its place in the output file made by <see cref="CreateLayout"/>.</summary>
    public static void WriteTensor(string outDir, TensorEntry t, ReadOnlySpan<byte> data)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (data.Length != t.ByteLength)
        {
            throw new ArgumentException($"Data holds {data.Length} bytes; tensor '{t.Name}' has {t.ByteLength}.", nameof(data));
        }
        using var handle = OpenOutput(outDir, t);
        RandomAccess.Write(handle, data, t.FileOffset);
    }

    /// <summary>Writes <paramref name="data"/> at byte <paramref name="byteStart"/> of the tensor's data (e.g. a block of rows).</summary>
    public static void WriteTensorRange(string outDir, TensorEntry t, long byteStart, ReadOnlySpan<byte> data)
    {
        ArgumentNullException.ThrowIfNull(t);
        CheckpointReader.CheckRange(t, byteStart, data.Length);
        using var handle = OpenOutput(outDir, t);
        lock (WriteLock(outDir, t))
        {
            RandomAccess.Write(handle, data, t.FileOffset + byteStart);
        }
    }

    // Buffered writes to one file take its inode lock in the kernel, so threads writing one file go one at a time
    // anyway, and a thread waiting there spins on its core while the writer copies. Waiting here sleeps instead and
    // leaves the core to the writer's page-cache work, to writeback and to threads writing other files (an A/B in
    // bench/RESULTS.md: a median 0.2 s less for a two-file checkpoint, no clear difference for one file; weak evidence on
    // a machine whose writes vary more than that). Striped by output path, never released.
    private static readonly object[] WriteLocks = Enumerable.Range(0, 64).Select(_ => new object()).ToArray();

    private static object WriteLock(string outDir, TensorEntry t) =>
        WriteLocks[(uint)Path.GetFullPath(Path.Combine(outDir, t.FileName)).GetHashCode() % (uint)WriteLocks.Length];

    /// <summary>
    /// Copies one tensor's bytes unchanged from the input to the output, in pieces of at most 16 MB: to the same place,
    /// or to <paramref name="output"/>'s when the output's layout differs from the input's (a quantized checkpoint).
    /// </summary>
    public static void CopyTensor(CheckpointManifest input, TensorEntry t, string outDir, TensorEntry? output = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(t);
        var to = output ?? t;
        if (to.ByteLength != t.ByteLength)
            throw new ArgumentException($"tensor '{t.Name}' has {t.ByteLength} bytes; its place in the output has {to.ByteLength}", nameof(output));
        long shift = to.FileOffset - t.FileOffset;
        if (t.ByteLength == 0)
        {
            return;
        }
        var inPath = input.PathOf(t.FileName);
        using var source = CheckpointReader.OpenForRead(inPath, t.Name);
        using var target = OpenOutput(outDir, to);
        if (RandomAccess.GetLength(source) < t.FileOffset + t.ByteLength)
            throw new CheckpointFormatException(inPath, t.Name, $"file is truncated: it has {RandomAccess.GetLength(source)} bytes, expected at least {t.FileOffset + t.ByteLength}");
        long copied = shift == 0 ? KernelCopy.Copy(source, target, t.FileOffset, t.ByteLength) : 0;
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(CopyChunkBytes, t.ByteLength - copied));
        try
        {
            // What the kernel did not copy (no copy_file_range here, or not between these files) goes through a buffer.
            for (long done = copied; done < t.ByteLength;)
            {
                var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, t.ByteLength - done));
                CheckpointReader.ReadExactly(source, chunk, t.FileOffset + done, inPath, t.Name);
                lock (WriteLock(outDir, to))
                {
                    RandomAccess.Write(target, (ReadOnlySpan<byte>)chunk, to.FileOffset + done);
                }
                done += chunk.Length;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    // Never truncates and shares writing: other processes fill other ranges of the same file.
    private static SafeFileHandle OpenOutput(string outDir, TensorEntry t)
    {
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        var path = Path.Combine(outDir, t.FileName);
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new InvalidOperationException(
                $"Output file '{path}' for tensor '{t.Name}' does not exist; create the layout (CheckpointOutput.CreateLayout) first.", e);
        }
        var length = RandomAccess.GetLength(handle);
        if (length < t.FileOffset + t.ByteLength)
        {
            handle.Dispose();
            throw new InvalidOperationException(
                $"Output file '{path}' has {length} bytes but tensor '{t.Name}' ends at {t.FileOffset + t.ByteLength}; the output layout does not match the input.");
        }
        return handle;
    }
}
