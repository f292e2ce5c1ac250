using Shears.Pruning.Encoders;

namespace Shears.Pruning.Tests.Encoders;

[Collection(MiniLmEncoderCollection.Name)]
public class BertTextTokenizerTests(MiniLmEncoderFixture miniLm)
{
    private string[] Vocabulary => File.ReadAllLines(miniLm.Files.VocabularyPath);

    [Fact]
    public void SentencesAreLowerCasedSplitIntoWordPiecesAndWrappedInClsAndSep()
    {
        var tokenizer = miniLm.Tokenizer;
        var ids = tokenizer.Tokenize("Hello, World! Tokenization");
        var vocab = Vocabulary;
        Assert.Equal(["[CLS]", "hello", ",", "world", "!", "token", "##ization", "[SEP]"], ids.Select(i => vocab[i]));
        Assert.Equal([101, 7592, 1010, 2088, 999, 19204, 3989, 102], ids);
        Assert.Equal(ids, tokenizer.Tokenize("hello , world ! tokenization"));
        // Accents are stripped, precomposed or combining, whatever the globalization mode.
        Assert.Equal(tokenizer.Tokenize("cafe zurich"), tokenizer.Tokenize("Café Zürich"));
        Assert.Equal(tokenizer.Tokenize("cafe"), tokenizer.Tokenize("Cafe\u0301"));
        Assert.Equal(tokenizer.Tokenize("naive resume a la ha noi"), tokenizer.Tokenize("NAÏVE RÉSUMÉ À LA HÀ NỘI"));
    }

    [Fact]
    public void LongSentencesAreCutToTheMaximumLengthAndEndWithSep()
    {
        var tokenizer = BertTextTokenizer.Create(miniLm.Files.VocabularyPath, maxLength: 8);
        var ids = tokenizer.Tokenize("one two three four five six seven eight nine ten");
        var vocab = Vocabulary;
        Assert.Equal(["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"], ids.Select(i => vocab[i]));
        Assert.Equal(256, miniLm.Tokenizer.MaxLength);
        Assert.Equal(256, miniLm.Tokenizer.Tokenize(string.Join(' ', Enumerable.Repeat("word", 1000))).Count);
    }

    [Fact]
    public void ABatchIsPaddedToItsLongestSentence()
    {
        var batch = miniLm.Tokenizer.Encode(["Yes.", "The quick brown fox."]);
        Assert.Equal((2, 7), (batch.Count, batch.Length));
        Assert.Equal([101, 2748, 1012, 102, 0, 0, 0], batch.InputIds[..7]);
        Assert.Equal([1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], batch.AttentionMask);
        Assert.All(batch.TokenTypeIds, t => Assert.Equal(0, t));
        Assert.Equal((4, 7), (batch.TokenCount(0), batch.TokenCount(1)));
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => BertTextTokenizer.Create(miniLm.Files.VocabularyPath, maxLength: 2));
        Assert.Throws<FileNotFoundException>(() => BertTextTokenizer.Create(Path.Combine(miniLm.Scratch("none"), "vocab.txt")));
        Assert.Throws<ArgumentException>(() => miniLm.Tokenizer.Encode([]));
    }

    /// <summary>Batches by length hold every sentence once, shortest first (ties in input order), each row its own tokens then padding.</summary>
    [Fact]
    public void BatchesByLengthHoldEachSentencesTokensShortestFirst()
    {
        var tokenizer = miniLm.Tokenizer;
        var sentences = MiniLmEncoderFixture.Sentences;
        var batches = SentenceBatches.ByLength(sentences, tokenizer, 3).ToArray();
        Assert.Equal(Enumerable.Range(0, sentences.Count), batches.SelectMany(b => b.Indices).Order());
        var lengths = batches.SelectMany(b => b.Indices).Select(i => tokenizer.Tokenize(sentences[i]).Count).ToArray();
        Assert.Equal(lengths.Order(), lengths);
        foreach (var (indices, batch) in batches)
        {
            Assert.InRange(indices.Length, 1, 3);
            Assert.Equal(tokenizer.Encode([.. indices.Select(i => sentences[i])]), batch, (a, b) =>
                a.InputIds.SequenceEqual(b.InputIds) && a.AttentionMask.SequenceEqual(b.AttentionMask) && a.Count == b.Count && a.Length == b.Length);
        }
    }
}
