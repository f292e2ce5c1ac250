using System.Text.Json;
using Shears.Pruning.Models;

namespace Shears.Pruning.Tests.Models;

/// <summary>
/// The checkpoint tokenizer against the reference implementations: tokenizers trained on Moby-Dick by Hugging Face
/// <c>tokenizers</c> 0.23 (byte-level BPE as GPT-2, LLaMA-3 and Qwen2 configure it, and one with NFKC and a BOS/EOS
/// template) and by <c>sentencepiece</c> 0.2 (BPE with byte fallback, LLaMA-2's settings), with the ids each gave for a
/// text holding a chapter, CRLF, runs of spaces and new lines, composed and decomposed accents, full-width digits,
/// ligatures, emoji, CJK, Greek, Cyrillic and special tokens inside the text (bench/reference/torch_reference.py).
/// </summary>
public class CheckpointTokenizerReferenceTests
{
    private static string Root => Path.Combine(AppContext.BaseDirectory, "Models", "TokenizerReference");

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("qwen2")]
    [InlineData("nfkc")]
    [InlineData("sentencepiece")]
    public void SameIdsAsTheReferenceImplementation(string style)
    {
        string dir = Path.Combine(Root, style);
        string text = File.ReadAllText(Path.Combine(Root, "test.txt"));
        var expected = JsonSerializer.Deserialize<long[]>(File.ReadAllText(Path.Combine(dir, "ids.json")))!;

        var actual = CheckpointTokenizer.Load(dir).Encode(text);

        int first = Enumerable.Range(0, Math.Min(expected.Length, actual.Length)).FirstOrDefault(i => expected[i] != actual[i], -1);
        Assert.True(first < 0 && expected.Length == actual.Length,
            $"{style}: {actual.Length} ids against the reference's {expected.Length}; first difference at {first}: "
            + $"[{string.Join(",", actual.Skip(Math.Max(0, first - 3)).Take(8))}] against [{string.Join(",", expected.Skip(Math.Max(0, first - 3)).Take(8))}]");
    }
}
