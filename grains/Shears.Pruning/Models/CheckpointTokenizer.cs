using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Shears.Pruning.Models;

/// <summary>
/// A decoder checkpoint's own tokenizer, read from the files beside its weights, turning text into the token ids
/// the model was trained on:
/// <list type="bullet">
/// <item><c>tokenizer.json</c> (Hugging Face) with a byte-level BPE model — GPT-2, LLaMA-3, Qwen and the like:
/// added tokens split out first, the normalizer (none or Unicode NFC/NFD/NFKC/NFKD), the pre-tokenizer
/// (<c>ByteLevel</c>, or <c>Split</c> by a regex then <c>ByteLevel</c>), BPE merges by Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/> (with <c>ignore_merges</c> honoured), and the special tokens the post-processor's
/// template puts around a single sequence;</item>
/// <item><c>tokenizer.model</c> (SentencePiece BPE) — LLaMA-1/2, Mistral — through <see cref="SentencePieceBpe"/>,
/// with <c>add_bos_token</c>/<c>add_eos_token</c> from <c>tokenizer_config.json</c> when present (default: BOS, no EOS).</item>
/// </list>
/// A <c>tokenizer.json</c> that is not byte-level BPE is used only if a <c>tokenizer.model</c> stands beside it;
/// otherwise loading fails naming the file and the part not supported.
/// </summary>
public sealed class CheckpointTokenizer
{
    public const string JsonFileName = "tokenizer.json";
    public const string SentencePieceFileName = "tokenizer.model";
    public const string ConfigFileName = "tokenizer_config.json";

    // GPT-2's pre-tokenization pattern, what a ByteLevel pre-tokenizer with use_regex splits by.
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Func<string, List<int>> _encode;

    private CheckpointTokenizer(string source, string kind, Func<string, List<int>> encode)
    {
        Source = source;
        Kind = kind;
        _encode = encode;
    }

    /// <summary>The file the tokenizer was read from.</summary>
    public string Source { get; }

    /// <summary>"byte-level BPE" or "SentencePiece".</summary>
    public string Kind { get; }

    /// <summary>
    /// The token ids of <paramref name="text"/> as one sequence, with the special tokens the tokenizer adds
    /// around a sequence (e.g. a leading BOS).
    /// </summary>
    public long[] Encode(string text) => _encode(text).Select(id => (long)id).ToArray();

    /// <summary>Reads the tokenizer of the checkpoint in <paramref name="checkpointDir"/>.</summary>
    /// <exception cref="FileNotFoundException">Neither tokenizer file is there.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed (the message names it).</exception>
    /// <exception cref="NotSupportedException">The tokenizer is of a kind not supported (the message names the file and part).</exception>
    public static CheckpointTokenizer Load(string checkpointDir)
    {
        string json = Path.Combine(checkpointDir, JsonFileName);
        string model = Path.Combine(checkpointDir, SentencePieceFileName);
        if (File.Exists(json))
        {
            try
            {
                return FromJson(json);
            }
            catch (NotSupportedException) when (File.Exists(model))
            {
                // e.g. LLaMA-2's tokenizer.json (Metaspace BPE with byte fallback): its tokenizer.model is the same tokenizer.
            }
        }
        if (File.Exists(model))
        {
            return FromSentencePiece(model, Path.Combine(checkpointDir, ConfigFileName));
        }
        throw new FileNotFoundException(
            $"The checkpoint '{checkpointDir}' has no {JsonFileName} or {SentencePieceFileName} to tokenize text with.", json);
    }

    private static CheckpointTokenizer FromSentencePiece(string path, string configPath)
    {
        bool bos = true, eos = false;
        if (File.Exists(configPath))
        {
            using var config = ParseJson(configPath);
            bos = OptionalBool(config.RootElement, "add_bos_token", configPath) ?? bos;
            eos = OptionalBool(config.RootElement, "add_eos_token", configPath) ?? eos;
        }
        var tokenizer = SentencePieceBpe.Load(path);
        return new CheckpointTokenizer(path, "SentencePiece", text =>
        {
            var ids = tokenizer.Encode(text);
            if (bos) ids.Insert(0, tokenizer.BosId);
            if (eos) ids.Add(tokenizer.EosId);
            return ids;
        });
    }

    private static CheckpointTokenizer FromJson(string path)
    {
        using var document = ParseJson(path);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"Tokenizer '{path}' must hold a JSON object, found {root.ValueKind}.");
        }
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"Tokenizer '{path}' has no \"model\" object.");
        }
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "(none)";
        if (type != "BPE")
        {
            throw new NotSupportedException($"Tokenizer '{path}': model type '{type}' is not supported; Shears reads byte-level BPE tokenizer.json files (or tokenizer.model).");
        }
        if (OptionalBool(model, "byte_fallback", path) == true)
        {
            throw new NotSupportedException($"Tokenizer '{path}': BPE with byte_fallback (SentencePiece-style) is not supported from tokenizer.json; put the checkpoint's tokenizer.model beside it.");
        }
        foreach (string field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (model.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
            {
                throw new NotSupportedException($"Tokenizer '{path}': model.{field} is not supported.");
            }
        }

        var normalize = ReadNormalizer(root, path);
        var (split, addPrefixSpace) = ReadPreTokenizer(root, path);
        var (prefix, suffix) = ReadTemplate(root, path);

        var vocab = ReadVocab(model, path);
        var merges = ReadMerges(model, path);
        bool ignoreMerges = OptionalBool(model, "ignore_merges", path) ?? false;
        var added = ReadAddedTokens(root, path);

        BpeTokenizer bpe;
        try
        {
            // The pieces are already split and byte-mapped here: the library only merges (its default pre-tokenizer would
            // split e.g. "Ġ(" apart, so encoding below skips pre-tokenization).
            bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = merges, ByteLevel = false, PreTokenizer = null, Normalizer = null });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"Tokenizer '{path}': its vocabulary or merges are inconsistent: {e.Message}", e);
        }
        var addedPattern = added.Count == 0
            ? null
            : new Regex(string.Join("|", added.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)), RegexOptions.CultureInvariant);

        List<int> Encode(string text)
        {
            var ids = new List<int>(text.Length / 3 + prefix.Count + suffix.Count);
            ids.AddRange(prefix);
            int start = 0;
            if (addedPattern is not null)
            {
                for (var m = addedPattern.Match(text); m.Success; m = m.NextMatch())
                {
                    EncodeSpan(text[start..m.Index], ids);
                    ids.Add(added[m.Value]);
                    start = m.Index + m.Length;
                }
            }
            EncodeSpan(text[start..], ids);
            ids.AddRange(suffix);
            return ids;
        }

        void EncodeSpan(string span, List<int> ids)
        {
            if (span.Length == 0) return;
            span = normalize(span);
            if (addPrefixSpace && span[0] != ' ') span = " " + span;
            int at = 0;
            for (var m = split.Match(span); m.Success; m = m.NextMatch())
            {
                if (m.Length == 0) continue;
                if (m.Index > at) EncodeWord(span[at..m.Index], ids); // Isolated: text between matches is a piece too
                EncodeWord(m.Value, ids);
                at = m.Index + m.Length;
            }
            if (at < span.Length) EncodeWord(span[at..], ids);
        }

        // Bytes whose alphabet character is not a piece: the BPE would drop them without a word, so a text needing one is
        // refused. Checked once here; real byte-level vocabularies hold all 256.
        var missing = Enumerable.Range(0, 256).Select(b => ByteLevelAlphabet.Of((byte)b)).Where(c => !vocab.ContainsKey(c.ToString())).ToArray();

        void EncodeWord(string word, List<int> ids)
        {
            string mapped = ByteLevelAlphabet.Map(word);
            if (missing.Length > 0 && mapped.IndexOfAny(missing) is int at and >= 0)
            {
                throw new InvalidDataException($"Tokenizer '{path}': the byte-level piece '{mapped[at]}' is not in the vocabulary (incomplete byte alphabet), and the text needs it.");
            }
            if (ignoreMerges && vocab.TryGetValue(mapped, out int whole))
            {
                ids.Add(whole);
                return;
            }
            foreach (var token in bpe.EncodeToTokens(mapped, out _, considerPreTokenization: false, considerNormalization: false))
                ids.Add(token.Id);
        }

        return new CheckpointTokenizer(path, "byte-level BPE", Encode);
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer file '{path}' is not valid JSON: {e.Message}", e);
        }
    }

    private static bool? OptionalBool(JsonElement obj, string field, string path)
    {
        if (!obj.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"Tokenizer file '{path}': \"{field}\" must be true or false, found {v.GetRawText()}."),
        };
    }

    private static Dictionary<string, int> ReadVocab(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"Tokenizer '{path}': model.vocab must be an object of token → id.");
        }
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocab.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new InvalidDataException($"Tokenizer '{path}': model.vocab['{entry.Name}'] is {entry.Value.GetRawText()}, not a non-negative integer id.");
            }
            result[entry.Name] = id;
        }
        return result;
    }

    private static List<string> ReadMerges(JsonElement model, string path)
    {
        var result = new List<string>();
        if (!model.TryGetProperty("merges", out var merges) || merges.ValueKind == JsonValueKind.Null) return result;
        if (merges.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"Tokenizer '{path}': model.merges must be an array.");
        }
        int index = 0;
        foreach (var merge in merges.EnumerateArray())
        {
            string? left = null, right = null;
            if (merge.ValueKind == JsonValueKind.String)
            {
                var parts = merge.GetString()!.Split(' ');
                if (parts.Length == 2) (left, right) = (parts[0], parts[1]);
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                     && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
            {
                (left, right) = (merge[0].GetString(), merge[1].GetString());
            }
            if (left is null || right is null || left.Length == 0 || right.Length == 0 || left.Contains(' ') || right.Contains(' '))
            {
                throw new InvalidDataException($"Tokenizer '{path}': model.merges[{index}] = {merge.GetRawText()} is not a pair of non-empty tokens without spaces.");
            }
            result.Add(left + " " + right);
            index++;
        }
        return result;
    }

    private static Dictionary<string, int> ReadAddedTokens(JsonElement root, string path)
    {
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!root.TryGetProperty("added_tokens", out var added) || added.ValueKind == JsonValueKind.Null) return result;
        if (added.ValueKind != JsonValueKind.Array)
        {
            throw new InvalidDataException($"Tokenizer '{path}': added_tokens must be an array.");
        }
        foreach (var token in added.EnumerateArray())
        {
            if (!token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String
                || !token.TryGetProperty("id", out var id) || !id.TryGetInt32(out int value) || value < 0)
            {
                throw new InvalidDataException($"Tokenizer '{path}': an added token {token.GetRawText()} lacks a string content or a non-negative id.");
            }
            if (content.GetString()!.Length > 0) result[content.GetString()!] = value;
        }
        return result;
    }

    private static Func<string, string> ReadNormalizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("normalizer", out var normalizer) || normalizer.ValueKind == JsonValueKind.Null) return s => s;
        var steps = new List<NormalizationForm>();
        void Add(JsonElement n)
        {
            string type = n.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
            switch (type)
            {
                case "NFC": steps.Add(NormalizationForm.FormC); break;
                case "NFD": steps.Add(NormalizationForm.FormD); break;
                case "NFKC": steps.Add(NormalizationForm.FormKC); break;
                case "NFKD": steps.Add(NormalizationForm.FormKD); break;
                case "Sequence":
                    foreach (var inner in n.GetProperty("normalizers").EnumerateArray()) Add(inner);
                    break;
                default:
                    throw new NotSupportedException($"Tokenizer '{path}': normalizer '{type}' is not supported (none, NFC, NFD, NFKC, NFKD or a Sequence of them are).");
            }
        }
        Add(normalizer);
        // Globalization-invariant processes return text unchanged from Normalize: refuse rather than tokenize wrongly.
        if (steps.Count > 0 && "e\u0301".Normalize(NormalizationForm.FormC) != "\u00e9")
        {
            throw new NotSupportedException($"Tokenizer '{path}' normalizes text (Unicode {string.Join(", ", steps)}), and this process has no Unicode normalization (globalization-invariant mode, or no ICU library).");
        }
        return s => steps.Aggregate(s, (text, form) => text.Normalize(form));
    }

    private static (Regex Split, bool AddPrefixSpace) ReadPreTokenizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind == JsonValueKind.Null)
        {
            throw new NotSupportedException($"Tokenizer '{path}': a BPE model without a ByteLevel pre-tokenizer is not supported.");
        }
        var items = Type(pre) == "Sequence" ? pre.GetProperty("pretokenizers").EnumerateArray().ToList() : [pre];
        Regex? split = null;
        bool byteLevel = false, prefixSpace = false;
        foreach (var item in items)
        {
            switch (Type(item))
            {
                case "Split" when split is null && !byteLevel:
                    string behavior = item.TryGetProperty("behavior", out var b) ? b.GetString() ?? "" : "";
                    bool invert = item.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True;
                    if (behavior != "Isolated" || invert)
                    {
                        throw new NotSupportedException($"Tokenizer '{path}': Split pre-tokenizer with behavior '{behavior}'{(invert ? " inverted" : "")} is not supported (Isolated is).");
                    }
                    var pattern = item.GetProperty("pattern");
                    split = pattern.TryGetProperty("Regex", out var regex)
                        ? Compile(regex.GetString()!, path)
                        : new Regex(Regex.Escape(pattern.GetProperty("String").GetString()!), RegexOptions.CultureInvariant);
                    break;
                case "ByteLevel" when !byteLevel:
                    byteLevel = true;
                    prefixSpace = item.TryGetProperty("add_prefix_space", out var p) && p.ValueKind == JsonValueKind.True;
                    bool useRegex = !item.TryGetProperty("use_regex", out var u) || u.ValueKind != JsonValueKind.False;
                    if (useRegex)
                    {
                        if (split is not null)
                        {
                            throw new NotSupportedException($"Tokenizer '{path}': a Split pre-tokenizer followed by a ByteLevel one that splits again is not supported.");
                        }
                        split = Compile(Gpt2Pattern, path);
                    }
                    break;
                default:
                    throw new NotSupportedException($"Tokenizer '{path}': pre-tokenizer '{Type(item)}' is not supported here (ByteLevel, or Split then ByteLevel, are).");
            }
        }
        if (!byteLevel)
        {
            throw new NotSupportedException($"Tokenizer '{path}': only byte-level BPE is supported from tokenizer.json (no ByteLevel pre-tokenizer found).");
        }
        return (split ?? new Regex(@"(?s).+", RegexOptions.CultureInvariant), prefixSpace);
    }

    private static Regex Compile(string pattern, string path)
    {
        try
        {
            return new Regex(pattern, RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"Tokenizer '{path}': the pre-tokenizer's regex cannot be used here: {e.Message}", e);
        }
    }

    private static string Type(JsonElement e) => e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "(none)";

    /// <summary>The special token ids a TemplateProcessing post-processor puts before and after a single sequence.</summary>
    private static (List<int> Prefix, List<int> Suffix) ReadTemplate(JsonElement root, string path)
    {
        var prefix = new List<int>();
        var suffix = new List<int>();
        if (!root.TryGetProperty("post_processor", out var post) || post.ValueKind == JsonValueKind.Null) return (prefix, suffix);
        var items = Type(post) == "Sequence" ? post.GetProperty("processors").EnumerateArray().ToList() : [post];
        foreach (var item in items)
        {
            switch (Type(item))
            {
                case "ByteLevel":
                    break; // offsets only
                case "TemplateProcessing":
                    var specials = item.GetProperty("special_tokens");
                    bool seenSequence = false;
                    foreach (var piece in item.GetProperty("single").EnumerateArray())
                    {
                        if (piece.TryGetProperty("Sequence", out _))
                        {
                            seenSequence = true;
                        }
                        else if (piece.TryGetProperty("SpecialToken", out var special))
                        {
                            string name = special.GetProperty("id").GetString()!;
                            if (!specials.TryGetProperty(name, out var entry))
                            {
                                throw new InvalidDataException($"Tokenizer '{path}': post_processor names special token '{name}' that its special_tokens lack.");
                            }
                            (seenSequence ? suffix : prefix).AddRange(entry.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32()));
                        }
                    }
                    break;
                default:
                    throw new NotSupportedException($"Tokenizer '{path}': post-processor '{Type(item)}' is not supported (ByteLevel and TemplateProcessing are).");
            }
        }
        return (prefix, suffix);
    }
}

/// <summary>
/// GPT-2's byte-level alphabet: every byte maps to one printable character — the printable Latin-1 bytes
/// ('!'–'~', '¡'–'¬', '®'–'ÿ') to themselves, the other 68 in byte order to U+0100, U+0101, … (so a space is 'Ġ').
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] Table = Build();

    private static char[] Build()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    /// <summary>The character byte <paramref name="b"/> maps to.</summary>
    public static char Of(byte b) => Table[b];

    /// <summary>The UTF-8 bytes of <paramref name="text"/>, each as its alphabet character.</summary>
    public static string Map(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, (chars, source) =>
        {
            for (int i = 0; i < source.Length; i++) chars[i] = Table[source[i]];
        });
    }
}
