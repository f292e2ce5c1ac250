using System.Text.Json;
using Shears.Pruning.Models;

namespace Shears.Testing;

/// <summary>
/// A byte-level BPE tokenizer.json small enough to work by hand: ids 0–255 are the bytes (in GPT-2's byte alphabet),
/// three merges — (Ġ,t)→Ġt 256, (h,e)→he 257, (Ġt,he)→Ġthe 258 —, "Ġthen" 261 in the vocabulary with no merge
/// that makes it (only <c>ignore_merges</c> reaches it), a BOS "&lt;s&gt;" 259 put first by the template, and an
/// added special token "&lt;|sep|&gt;" 260. The GPT-2 pre-tokenizer regex splits the text.
/// </summary>
public static class TinyTokenizer
{
    public const int VocabSize = 262;

    public static void Write(string dir, bool ignoreMerges = false)
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.Of((byte)b).ToString()] = b;
        vocab["Ġt"] = 256;
        vocab["he"] = 257;
        vocab["Ġthe"] = 258;
        vocab["Ġthen"] = 261;
        var json = new
        {
            version = "1.0",
            added_tokens = new object[]
            {
                new { id = 259, content = "<s>", special = true },
                new { id = 260, content = "<|sep|>", special = true },
            },
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            post_processor = new
            {
                type = "TemplateProcessing",
                single = new object[] { new { SpecialToken = new { id = "<s>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } } },
                pair = Array.Empty<object>(),
                special_tokens = new Dictionary<string, object> { ["<s>"] = new { id = "<s>", ids = new[] { 259 }, tokens = new[] { "<s>" } } },
            },
            model = new
            {
                type = "BPE",
                dropout = (object?)null,
                unk_token = (object?)null,
                fuse_unk = false,
                byte_fallback = false,
                ignore_merges = ignoreMerges,
                vocab,
                merges = new object[] { "Ġ t", new[] { "h", "e" }, "Ġt he" },
            },
        };
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, CheckpointTokenizer.JsonFileName), JsonSerializer.Serialize(json));
    }
}
