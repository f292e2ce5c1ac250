using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Copies a byte range between two files inside the kernel (Linux <c>copy_file_range</c>), as <c>cp</c> does: the bytes
/// never pass through this process, and a file system that shares extents (XFS, Btrfs) copies none at all.
/// </summary>
internal static partial class KernelCopy
{
    /// <summary>
    /// Copies bytes [<paramref name="offset"/>, + <paramref name="length"/>) of <paramref name="source"/> to the same
    /// offset of <paramref name="target"/> and returns how many leading bytes it copied: all of them, or fewer (0 where
    /// the kernel or the file system cannot), the rest left to the caller.
    /// </summary>
    public static long Copy(SafeFileHandle source, SafeFileHandle target, long offset, long length)
    {
        if (!OperatingSystem.IsLinux() || length == 0) return 0;
        bool addedSource = false, addedTarget = false;
        try
        {
            source.DangerousAddRef(ref addedSource);
            target.DangerousAddRef(ref addedTarget);
            int from = (int)source.DangerousGetHandle(), to = (int)target.DangerousGetHandle();
            long done = 0;
            while (done < length)
            {
                long inAt = offset + done, outAt = offset + done;
                nint n;
                try
                {
                    n = CopyFileRange(from, ref inAt, to, ref outAt, (nuint)Math.Min(length - done, 1L << 30), 0);
                }
                catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
                {
                    return done;
                }
                // 0: the source ended early (the caller's read reports it); -1: not supported here (EXDEV, EINVAL,
                // ENOSYS, EOPNOTSUPP...) or a real I/O error, which the caller's own read and write then meet.
                if (n <= 0) return done;
                done += n;
            }
            return done;
        }
        finally
        {
            if (addedSource) source.DangerousRelease();
            if (addedTarget) target.DangerousRelease();
        }
    }

    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    private static partial nint CopyFileRange(int fdIn, ref long offIn, int fdOut, ref long offOut, nuint length, uint flags);
}
