using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Models;
using Shears.Pruning.Tests.Checkpoints;

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

    /// <summary>
    /// The LLaMA-3-style reference tokenizer with one part changed to something Shears does not read: refused naming the
    /// file and the part (NotSupportedException for a kind not supported, InvalidDataException for a malformed file).
    /// </summary>
    [Theory]
    [InlineData("normalizer-lowercase", "normalizer 'Lowercase'", false)]
    [InlineData("post-processor-bert", "post-processor 'BertProcessing'", false)]
    [InlineData("split-removed", "behavior 'Removed'", false)]
    [InlineData("split-then-splitting-bytelevel", "splits again", false)]
    [InlineData("subword-prefix", "model.continuing_subword_prefix", false)]
    [InlineData("byte-fallback", "byte_fallback", false)]
    [InlineData("merge-not-a-pair", "model.merges[0]", true)]
    [InlineData("added-tokens-object", "added_tokens must be an array", true)]
    [InlineData("template-unknown-special", "special token '<|missing|>'", true)]
    [InlineData("merged-piece-missing", "vocabulary or merges are inconsistent", true)]
    [InlineData("byte-missing", "'~' is not in the vocabulary (incomplete byte alphabet)", true)]
    [InlineData("ignore-merges-not-bool", "\"ignore_merges\" must be true or false", true)]
    public void TokenizerJsonPartsNotReadAreNamed(string change, string expected, bool malformed)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "llama3", "tokenizer.json")))!.AsObject();
        var model = json["model"]!.AsObject();
        var sequence = json["pre_tokenizer"]!["pretokenizers"]!.AsArray();
        switch (change)
        {
            case "normalizer-lowercase": json["normalizer"] = new JsonObject { ["type"] = "Lowercase" }; break;
            case "post-processor-bert": json["post_processor"] = new JsonObject { ["type"] = "BertProcessing" }; break;
            case "split-removed": sequence[0]!["behavior"] = "Removed"; break;
            case "split-then-splitting-bytelevel": sequence[1]!["use_regex"] = true; break;
            case "subword-prefix": model["continuing_subword_prefix"] = "##"; break;
            case "byte-fallback": model["byte_fallback"] = true; break;
            case "merge-not-a-pair": model["merges"]![0] = new JsonArray("Ġ"); break;
            case "added-tokens-object": json["added_tokens"] = new JsonObject(); break;
            case "template-unknown-special":
                json["post_processor"]!["processors"]![1]!["single"]![0]!["SpecialToken"]!["id"] = "<|missing|>"; break;
            case "merged-piece-missing": model["vocab"]!.AsObject().Remove("Ġ"); break;
            // In no merge: the file loads, and a text that needs the byte is refused.
            case "byte-missing": model["vocab"]!.AsObject().Remove("~"); break;
            case "ignore-merges-not-bool": model["ignore_merges"] = "yes"; break;
        }
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, CheckpointTokenizer.JsonFileName);
        File.WriteAllText(path, json.ToJsonString());

        var e = Record.Exception(() => { CheckpointTokenizer.Load(dir.Path).Encode("a tilde ~ here"); });
        Assert.IsType(malformed ? typeof(InvalidDataException) : typeof(NotSupportedException), e);
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }
}
