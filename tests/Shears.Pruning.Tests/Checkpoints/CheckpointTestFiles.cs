using System.Buffers.Binary;
using System.Text;

namespace Shears.Pruning.Tests.Checkpoints;

/// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "shears-ckpt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public string Sub(string name)
    {
        var dir = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Builds safetensors files by hand, including broken ones.</summary>
internal static class RawSafetensors
{
    /// <summary>One header entry: "name":{"dtype":…,"shape":[…],"data_offsets":[b,e]}.</summary>
    public static string Entry(string name, string dtype, long[] shape, long begin, long end) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{begin},{end}]}}";

    public static string Header(params string[] entries) => "{" + string.Join(",", entries) + "}";

    /// <summary>Writes the length prefix, the header and <paramref name="dataLength"/> bytes of data (0, 1, 2, …).</summary>
    public static string Write(string path, string header, long dataLength, ulong? declaredHeaderLength = null) =>
        Write(path, Encoding.UTF8.GetBytes(header), dataLength, declaredHeaderLength);

    public static string Write(string path, byte[] header, long dataLength, ulong? declaredHeaderLength = null)
    {
        var bytes = new byte[8 + header.Length + dataLength];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredHeaderLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (var i = 0; i < dataLength; i++)
        {
            bytes[8 + header.Length + i] = (byte)i;
        }
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    public static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
