using System.Text.Json;

namespace Shears.Pruning.Models;

/// <summary>Evaluation text as token-id sequences.</summary>
public static class EvalData
{
    /// <summary>
    /// Reads the sequences of <paramref name="path"/>. A .json file holds an array of token-id arrays,
    /// each used as given (at least 2 non-negative integer ids). Any other file is UTF-8 text: tokenized as one
    /// sequence by the tokenizer of the checkpoint in <paramref name="checkpointDir"/> (see
    /// <see cref="CheckpointTokenizer"/>; special tokens such as a leading BOS are added once, at the start of the
    /// file) and cut into consecutive sequences of <paramref name="seqLen"/> tokens; a shorter last piece is kept
    /// if it holds at least 2 tokens, so every token of the file after the first is predicted exactly once.
    /// </summary>
    public static IReadOnlyList<long[]> LoadTokenIds(string path, int seqLen, string? checkpointDir = null) =>
        LoadTokenIds(path, seqLen, checkpointDir is null ? null : () => CheckpointTokenizer.Load(checkpointDir));

    /// <summary>
    /// As <see cref="LoadTokenIds(string, int, string?)"/>, with the tokenizer given (asked for only when the file is
    /// text): a run reading several files loads its tokenizer once.
    /// </summary>
    public static IReadOnlyList<long[]> LoadTokenIds(string path, int seqLen, Func<CheckpointTokenizer>? tokenizer)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (seqLen < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(seqLen), $"The evaluation sequence length is {seqLen}; a prediction needs at least 2 tokens.");
        }
        var full = Path.GetFullPath(path);
        if (!string.Equals(Path.GetExtension(full), ".json", StringComparison.OrdinalIgnoreCase))
        {
            if (tokenizer is null)
            {
                throw new NotSupportedException(
                    $"Evaluation data '{full}' is text, and no checkpoint tokenizer was given to tokenize it; use a .json file of token-id arrays.");
            }
            return Cut(tokenizer().Encode(ReadText(full)), seqLen, full);
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

    /// <summary>Consecutive pieces of <paramref name="seqLen"/> ids; a last piece of at least 2 ids is kept.</summary>
    public static IReadOnlyList<long[]> Cut(long[] ids, int seqLen, string source)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (seqLen < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(seqLen), $"The evaluation sequence length is {seqLen}; a prediction needs at least 2 tokens.");
        }
        var sequences = new List<long[]>(ids.Length / seqLen + 1);
        for (int start = 0; start < ids.Length; start += seqLen)
        {
            int length = Math.Min(seqLen, ids.Length - start);
            if (length >= 2) sequences.Add(ids[start..(start + length)]);
        }
        if (sequences.Count == 0)
        {
            throw new InvalidDataException($"Evaluation data '{source}' tokenizes to {ids.Length} token(s); at least 2 are needed (T tokens give T−1 predictions).");
        }
        return sequences;
    }

    private static string ReadText(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FileNotFoundException($"Evaluation data '{path}' does not exist.", path, e);
        }
        try
        {
            var text = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(bytes);
            return text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text;
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new InvalidDataException($"Evaluation data '{path}' is not UTF-8 text (invalid bytes at offset {e.Index}).", e);
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
