using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Shears.Pruning.Models;

// Reading the parts of tokenizer.json: vocabulary, merges, added tokens, normalizer, pre-tokenizer and template.
public sealed partial class CheckpointTokenizer
{
    private static JsonDocument ParseJson(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        // Strings with invalid UTF-8 would parse and then fail when read, outside the checks of each field.
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new InvalidDataException($"Tokenizer file '{path}' is not valid UTF-8.");
        try
        {
            return JsonDocument.Parse(bytes);
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
