using Microsoft.ML.Tokenizers;

namespace Shears.Pruning.Encoders;

/// <summary>
/// Uncased BERT WordPiece tokenization of sentences into <see cref="BertBatch"/>es, as Hugging Face's
/// BertTokenizer(do_lower_case=True) with truncation does for all-MiniLM-L6-v2: lower case, accents stripped,
/// punctuation and CJK split, WordPiece; the word pieces cut to <see cref="MaxLength"/> − 2, then [CLS] … [SEP].
/// Built on Microsoft.ML.Tokenizers' <see cref="BertTokenizer"/>.
/// </summary>
public sealed class BertTextTokenizer
{
    /// <summary>all-MiniLM-L6-v2's max_seq_length in sentence-transformers.</summary>
    public const int MiniLmMaxLength = 256;

    private readonly BertTokenizer _tokenizer;

    private BertTextTokenizer(BertTokenizer tokenizer, int maxLength)
    {
        _tokenizer = tokenizer;
        MaxLength = maxLength;
    }

    /// <summary>The longest sequence produced, [CLS] and [SEP] included.</summary>
    public int MaxLength { get; }

    public int ClassificationTokenId => _tokenizer.ClassificationTokenId;

    public int SeparatorTokenId => _tokenizer.SeparatorTokenId;

    public int PaddingTokenId => _tokenizer.PaddingTokenId;

    /// <summary>Reads a WordPiece vocabulary (vocab.txt, one token a line, the line number is the id).</summary>
    public static BertTextTokenizer Create(string vocabularyPath, int maxLength = MiniLmMaxLength)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabularyPath);
        if (maxLength < 3)
        {
            throw new ArgumentOutOfRangeException(nameof(maxLength), $"A sequence needs room for [CLS], one token and [SEP]; got a maximum length of {maxLength}.");
        }
        if (!File.Exists(vocabularyPath))
        {
            throw new FileNotFoundException($"The WordPiece vocabulary '{vocabularyPath}' does not exist.", vocabularyPath);
        }
        var options = new BertOptions
        {
            LowerCaseBeforeTokenization = true,
            ApplyBasicTokenization = true,
            SplitOnSpecialTokens = true,
            IndividuallyTokenizeCjk = true,
            // Hugging Face strips accents whenever it lower-cases (strip_accents unset); AccentFolding does it
            // where string normalization is unavailable.
            RemoveNonSpacingMarks = true,
        };
        return new BertTextTokenizer(BertTokenizer.Create(vocabularyPath, options), maxLength);
    }

    /// <summary>[CLS], the sentence's word pieces (at most <see cref="MaxLength"/> − 2), [SEP].</summary>
    public IReadOnlyList<int> Tokenize(string sentence)
    {
        ArgumentNullException.ThrowIfNull(sentence);
        var pieces = _tokenizer.EncodeToIds(AccentFolding.Fold(sentence), addSpecialTokens: false, considerPreTokenization: true, considerNormalization: true);
        var kept = Math.Min(pieces.Count, MaxLength - 2);
        var ids = new int[kept + 2];
        ids[0] = ClassificationTokenId;
        for (var i = 0; i < kept; i++)
        {
            ids[i + 1] = pieces[i];
        }
        ids[^1] = SeparatorTokenId;
        return ids;
    }

    /// <summary>Tokenizes <paramref name="sentences"/> and pads them with [PAD] to the longest.</summary>
    public BertBatch Encode(IReadOnlyList<string> sentences)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        if (sentences.Count == 0)
        {
            throw new ArgumentException("There are no sentences to encode.", nameof(sentences));
        }
        return Batch(sentences.Select(Tokenize).ToArray());
    }

    /// <summary>A batch of sentences already tokenized by <see cref="Tokenize"/>: right-padded, with its attention mask.</summary>
    public BertBatch Batch(IReadOnlyList<IReadOnlyList<int>> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0)
        {
            throw new ArgumentException("There are no sentences to encode.", nameof(rows));
        }
        var length = rows.Max(r => r.Count);
        var ids = new long[rows.Count * length];
        var mask = new long[rows.Count * length];
        Array.Fill(ids, PaddingTokenId);
        for (var r = 0; r < rows.Count; r++)
        {
            for (var t = 0; t < rows[r].Count; t++)
            {
                ids[r * length + t] = rows[r][t];
                mask[r * length + t] = 1;
            }
        }
        return new BertBatch(ids, mask, new long[rows.Count * length], rows.Count, length);
    }
}
