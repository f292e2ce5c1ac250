namespace Shears.Pruning.Evaluation;

/// <summary>One aligned pair: a reference (e.g. "Genesis 1:1"), a query sentence and its paraphrase.</summary>
public sealed record SentencePair(string Reference, string Query, string Match);

/// <summary>Reads aligned sentence pairs from a tab-separated file: a header line, then ref, query, match per line (data/bible-ot-*.tsv: ref, kjv, web).</summary>
public static class SentencePairs
{
    /// <summary>The pairs of <paramref name="path"/> in file order; at most <paramref name="count"/> when given.</summary>
    public static IReadOnlyList<SentencePair> Read(string path, int? count = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (count is < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"A count of pairs cannot be negative; got {count}.");
        }
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The sentence pairs file '{path}' does not exist (scripts/make-bible-pairs.sh writes data/bible-ot-pairs.tsv).", path);
        }
        var pairs = new List<SentencePair>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (lineNumber == 1 || line.Length == 0)
            {
                continue; // the header
            }
            if (count is { } limit && pairs.Count == limit)
            {
                break;
            }
            var fields = line.Split('\t');
            if (fields.Length != 3 || fields[1].Length == 0 || fields[2].Length == 0)
            {
                throw new InvalidDataException($"Line {lineNumber} of '{path}' is not 'ref<TAB>query<TAB>match' with two non-empty sentences.");
            }
            pairs.Add(new SentencePair(fields[0], fields[1], fields[2]));
        }
        return pairs;
    }
}
