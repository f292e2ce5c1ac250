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
public sealed partial class CheckpointTokenizer
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
        try
        {
            return ReadJson(path);
        }
        // A field the checks below take for granted that is absent or of another JSON kind (an object for a string, a
        // fraction for an id): JsonElement's own exceptions, turned into the file's error.
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or OverflowException)
        {
            throw new InvalidDataException($"Tokenizer '{path}': a field is missing or of the wrong kind ({e.Message})", e);
        }
    }

    private static CheckpointTokenizer ReadJson(string path)
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
}
