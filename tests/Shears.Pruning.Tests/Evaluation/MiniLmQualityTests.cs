using Shears.Pruning.Evaluation;
using Shears.Pruning.Tests.Checkpoints;
using Shears.Pruning.Tests.Encoders;
using Xunit.Abstractions;

namespace Shears.Pruning.Tests.Evaluation;

[Collection(MiniLmEncoderCollection.Name)]
public class MiniLmQualityTests(MiniLmEncoderFixture miniLm, ITestOutputHelper output)
{
    public const string SampleFile = "bible-ot-sample-2000.tsv";

    /// <summary>data/ at the repository root, found from the test's output folder upward.</summary>
    public static string DataFile(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "data", name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new FileNotFoundException($"data/{name} was not found above {AppContext.BaseDirectory}.");
    }

    [Fact]
    public void TheHeldOutSampleIsTwoThousandOldTestamentPairs()
    {
        var pairs = SentencePairs.Read(DataFile(SampleFile));
        Assert.Equal(2000, pairs.Count);
        Assert.Equal(2000, pairs.Select(p => p.Reference).Distinct().Count());
        Assert.StartsWith("Genesis 1:", pairs[0].Reference);
        Assert.StartsWith("Malachi 4:", pairs[^1].Reference);
        string[] newTestament = ["Matthew", "Mark", "Luke", "John", "Acts", "Romans", "Revelation", "Tobit", "Judith"];
        Assert.DoesNotContain(pairs, p => newTestament.Any(book => p.Reference.StartsWith(book + " ", StringComparison.Ordinal)));
        Assert.DoesNotContain(pairs, p => p.Query.Contains('<') || p.Match.Contains('<')); // no markup left
        Assert.Equal(5, SentencePairs.Read(DataFile(SampleFile), count: 5).Count);
    }

    [Fact]
    public void AMalformedPairsFileNamesTheLine()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir.File("pairs.tsv"), ["ref\tkjv\tweb", "Gen 1:1\ta\tb", "Gen 1:2\tonly two fields"]);
        Assert.Contains("Line 3", Assert.Throws<InvalidDataException>(() => SentencePairs.Read(dir.File("pairs.tsv"))).Message);
    }

    [Fact]
    public void PruningLowersFidelityAndNeighbourAgreementUnderOnnxRuntime()
    {
        var pairs = SentencePairs.Read(DataFile(SampleFile), count: 24);

        var r = MiniLmQuality.Measure(miniLm.Files.ModelPath, miniLm.PrunedPath, miniLm.Files.VocabularyPath, pairs);

        output.WriteLine($"50% per matrix over {pairs.Count} pairs: {r}");
        Assert.Equal(24, r.Sentences);
        Assert.InRange(r.Fidelity.Mean, 0.2, 0.99);
        Assert.InRange(r.Fidelity.Percentile5, r.Fidelity.Min, r.Fidelity.Mean);
        Assert.InRange(r.NeighbourAgreement, 0.0, 0.99);
        Assert.True(r.DenseRetrieval.Top1 > 0.8, $"KJV → WEB top-1 of the dense model {r.DenseRetrieval.Top1}");
    }

    [Fact]
    public void TheDenseModelAgainstItselfIsPerfectUnderTorchSharp()
    {
        var pairs = SentencePairs.Read(DataFile(SampleFile), count: 12);

        var r = MiniLmQuality.Measure(miniLm.Files.ModelPath, miniLm.Files.ModelPath, miniLm.Files.VocabularyPath, pairs, EncoderRuntime.TorchSharp);

        Assert.Equal(1.0, r.Fidelity.Mean, 6);
        Assert.Equal(1.0, r.Fidelity.Min, 6);
        Assert.Equal(1.0, r.NeighbourAgreement);
        Assert.Equal(r.DenseRetrieval, r.Retrieval.SameModel);
        Assert.Equal(r.DenseRetrieval, r.Retrieval.DenseCorpus);
    }
}
