using System.Text.Json;
using System.Text.RegularExpressions;

namespace Shears.Pruning.Checkpoints;

/// <summary>
/// Writes tensors held in memory as a Hugging Face safetensors checkpoint: one model.safetensors, or
/// model-0000i-of-0000N.safetensors shards with model.safetensors.index.json.
/// </summary>
public static partial class ShardedCheckpointWriter
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = CheckpointReader.DefaultIndexFileName;

    /// <summary>
    /// Writes <paramref name="tensors"/> in the given order, starting a new shard when the next tensor
    /// would take the shard's data past <paramref name="maxShardBytes"/> (a larger tensor gets a shard
    /// of its own). Model files of an earlier checkpoint in <paramref name="dir"/> that the new one does
    /// not use (a stale index, single file or shards) are deleted, so the directory reads as the new checkpoint.
    /// </summary>
    public static void Write(
        string dir,
        IReadOnlyList<(string Name, TensorDType DType, long[] Shape, byte[] Data)> tensors,
        long maxShardBytes,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(dir);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        if (tensors.Count == 0)
        {
            throw new ArgumentException("A checkpoint needs at least one tensor.", nameof(tensors));
        }
        foreach (var (name, dtype, shape, data) in tensors)
        {
            var expected = checked(TensorEntry.CountElements(shape) * dtype.ElementSize());
            if (data.LongLength != expected)
            {
                throw new ArgumentException(
                    $"Tensor '{name}' has {data.LongLength} bytes of data; expected {expected} (shape [{string.Join(", ", shape)}] of {dtype}).", nameof(tensors));
            }
        }

        var shards = new List<List<int>>();
        long shardBytes = 0;
        for (var i = 0; i < tensors.Count; i++)
        {
            var size = tensors[i].Data.LongLength;
            if (shards.Count == 0 || (shardBytes > 0 && shardBytes + size > maxShardBytes))
            {
                shards.Add([]);
                shardBytes = 0;
            }
            shards[^1].Add(i);
            shardBytes += size;
        }

        Directory.CreateDirectory(dir);
        var fileNames = shards.Count == 1
            ? [SingleFileName]
            : Enumerable.Range(1, shards.Count).Select(i => $"model-{i:D5}-of-{shards.Count:D5}.safetensors").ToArray();

        for (var s = 0; s < shards.Count; s++)
        {
            var members = shards[s].Select(i => (tensors[i].Name, tensors[i].DType, tensors[i].Shape)).ToArray();
            using var writer = new SafetensorsWriter(Path.Combine(dir, fileNames[s]), members, metadata);
            foreach (var i in shards[s])
            {
                writer.WriteTensor(tensors[i].Name, tensors[i].Data);
            }
            writer.Complete();
        }

        if (shards.Count > 1)
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (var s = 0; s < shards.Count; s++)
            {
                foreach (var i in shards[s])
                {
                    weightMap.Add(tensors[i].Name, fileNames[s]);
                }
            }
            WriteIndex(Path.Combine(dir, IndexFileName), tensors.Sum(t => t.Data.LongLength), weightMap);
        }

        DeleteStaleModelFiles(dir, fileNames, keepIndex: shards.Count > 1);
    }

    private static void WriteIndex(string path, long totalSize, SortedDictionary<string, string> weightMap)
    {
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("metadata");
            writer.WriteNumber("total_size", totalSize);
            writer.WriteEndObject();
            writer.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap)
            {
                writer.WriteString(name, file);
            }
            writer.WriteEndObject();
            writer.WriteEndObject();
        }
        File.Move(temp, path, overwrite: true);
    }

    private static void DeleteStaleModelFiles(string dir, IReadOnlyCollection<string> written, bool keepIndex)
    {
        foreach (var path in Directory.EnumerateFiles(dir))
        {
            var name = Path.GetFileName(path);
            var stale = (name == IndexFileName && !keepIndex)
                || ((name == SingleFileName || ShardName().IsMatch(name)) && !written.Contains(name));
            if (stale)
            {
                File.Delete(path);
            }
        }
    }

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$")]
    private static partial Regex ShardName();
}
