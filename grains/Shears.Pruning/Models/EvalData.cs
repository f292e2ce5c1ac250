using System.Text.Json;

namespace Shears.Pruning.Models;

/// <summary>Evaluation text as token-id sequences.</summary>
public static class EvalData
{
    /// <summary>
    /// Reads the sequences of <paramref name="path"/>. A .json file holds an array of token-id arrays,
    /// each used as given (at least 2 non-negative integer ids); <paramref name="seqLen"/> is the length
    /// text will be cut into once tokenization is supported.
    /// </summary>
    public static IReadOnlyList<long[]> LoadTokenIds(string path, int seqLen)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (seqLen < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(seqLen), $"The evaluation sequence length is {seqLen}; a prediction needs at least 2 tokens.");
        }
        var full = Path.GetFullPath(path);
        if (!string.Equals(Path.GetExtension(full), ".json", StringComparison.OrdinalIgnoreCase))
        {
            throw new NotSupportedException(
                $"Evaluation data '{full}' is not a .json file of token-id arrays; tokenizing text with the checkpoint's tokenizer is not supported yet.");
        }

        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(full);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FileNotFoundException($"Evaluation data '{full}' does not exist.", full, e);
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Evaluation data '{full}' is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Array)
            {
                throw new InvalidDataException($"Evaluation data '{full}' must be a JSON array of token-id arrays, found {root.ValueKind}.");
            }
            var sequences = new List<long[]>(root.GetArrayLength());
            var index = 0;
            foreach (var entry in root.EnumerateArray())
            {
                sequences.Add(ReadSequence(entry, full, index++));
            }
            if (sequences.Count == 0)
            {
                throw new InvalidDataException($"Evaluation data '{full}' holds no sequence.");
            }
            return sequences;
        }
    }

    private static long[] ReadSequence(JsonElement entry, string path, int index)
    {
        if (entry.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"Evaluation data '{path}', sequence {index}: expected an array of token ids, found {entry.ValueKind}.");
        }
        var ids = new long[entry.GetArrayLength()];
        if (ids.Length < 2)
        {
            throw new InvalidDataException(
                $"Evaluation data '{path}', sequence {index}: has {ids.Length} token(s); a sequence needs at least 2 (T tokens give T−1 predictions).");
        }
        var position = 0;
        foreach (var id in entry.EnumerateArray())
        {
            if (id.ValueKind != JsonValueKind.Number || !id.TryGetInt64(out var value) || value < 0)
            {
                throw new InvalidDataException(
                    $"Evaluation data '{path}', sequence {index}, position {position}: {id.GetRawText()} is not a token id; expected a non-negative integer.");
            }
            ids[position++] = value;
        }
        return ids;
    }
}
