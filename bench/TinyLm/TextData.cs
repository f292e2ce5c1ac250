using System.Text;
using System.Text.Json;

namespace Shears.TinyLm;

/// <summary>
/// Moby-Dick cut into disjoint slices by chapter order, tokenized byte-level (each UTF-8 byte is one
/// token id, vocabulary 256): training (front matter and chapters 1–114), calibration (chapters 115–122)
/// and evaluation (chapters 123–135 and the epilogue, the last ~10% of the book).
/// </summary>
internal static class TextData
{
    public const int SeqLen = 128;
    public const int LastTrainChapter = 114;
    public const int LastCalibrationChapter = 122;

    public sealed record Split(string Name, string Chapters, byte[] Bytes);

    public static IReadOnlyList<Split> Read(string textDir)
    {
        if (!File.Exists(Path.Combine(textDir, "chapter_135.txt")))
        {
            throw new FileNotFoundException($"Moby-Dick is not in '{textDir}'; run bench/TinyLm/get-text.sh first.");
        }
        string Chapter(int i) => File.ReadAllText(Path.Combine(textDir, $"chapter_{i}.txt"));
        string Join(IEnumerable<string> parts) => string.Join("\n\n", parts.Select(p => p.Trim('\n', '\r', ' ')));

        var train = Join(new[] { File.ReadAllText(Path.Combine(textDir, "etymology.txt")), File.ReadAllText(Path.Combine(textDir, "extracts.txt")) }
            .Concat(Enumerable.Range(1, LastTrainChapter).Select(Chapter)));
        var calibration = Join(Enumerable.Range(LastTrainChapter + 1, LastCalibrationChapter - LastTrainChapter).Select(Chapter));
        var eval = Join(Enumerable.Range(LastCalibrationChapter + 1, 135 - LastCalibrationChapter).Select(Chapter)
            .Append(File.ReadAllText(Path.Combine(textDir, "epilogue.txt"))));
        return
        [
            new Split("train", $"Etymology, Extracts, chapters 1–{LastTrainChapter}", Encoding.UTF8.GetBytes(train)),
            new Split("calibration", $"chapters {LastTrainChapter + 1}–{LastCalibrationChapter}", Encoding.UTF8.GetBytes(calibration)),
            new Split("eval", $"chapters {LastCalibrationChapter + 1}–135, Epilogue", Encoding.UTF8.GetBytes(eval)),
        ];
    }

    /// <summary>Consecutive non-overlapping windows of <paramref name="length"/> bytes (a shorter tail is dropped).</summary>
    public static long[][] Windows(byte[] bytes, int length, int? limit = null)
    {
        var count = bytes.Length / length;
        if (limit is int l)
        {
            count = Math.Min(count, l);
        }
        var result = new long[count][];
        for (var i = 0; i < count; i++)
        {
            result[i] = new long[length];
            for (var j = 0; j < length; j++)
            {
                result[i][j] = bytes[i * length + j];
            }
        }
        return result;
    }

    /// <summary><paramref name="count"/> of the windows, evenly spaced from first to last (all when there are fewer).</summary>
    public static long[][] Spread(long[][] windows, int count)
    {
        if (windows.Length <= count)
        {
            return windows;
        }
        return Enumerable.Range(0, count).Select(i => windows[(int)((long)i * windows.Length / count)]).ToArray();
    }

    /// <summary>Windows at seeded random offsets: the order fine-tuning reads them in.</summary>
    public static long[][] RandomWindows(byte[] bytes, int length, int count, int seed)
    {
        var random = new Random(seed);
        var result = new long[count][];
        for (var i = 0; i < count; i++)
        {
            var start = random.Next(0, bytes.Length - length + 1);
            result[i] = new long[length];
            for (var j = 0; j < length; j++)
            {
                result[i][j] = bytes[start + j];
            }
        }
        return result;
    }

    public static void WriteTokens(string path, long[][] sequences)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var stream = File.Create(path);
        JsonSerializer.Serialize(stream, sequences);
    }

    public static long[][] ReadTokens(string path)
    {
        using var stream = File.OpenRead(path);
        return JsonSerializer.Deserialize<long[][]>(stream) ?? throw new InvalidDataException($"'{path}' holds no token arrays.");
    }
}
