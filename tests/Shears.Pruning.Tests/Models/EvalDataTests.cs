using Shears.Pruning.Models;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Models;

public class EvalDataTests
{
    [Fact]
    public void ReadsEachArrayAsGiven()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("eval.json"), "[[1, 2, 3], [0, 127], [5, 6, 7, 8, 9]]");

        var sequences = EvalData.LoadTokenIds(dir.File("eval.json"), seqLen: 4);

        Assert.Equal([[1L, 2, 3], [0L, 127], [5L, 6, 7, 8, 9]], sequences);
    }

    [Theory]
    [InlineData("[[1, 2], [3]]", "sequence 1", "at least 2")]
    [InlineData("[[1, 2], [4, -1]]", "sequence 1, position 1", "-1")]
    [InlineData("[[1, 2.5]]", "sequence 0, position 1", "2.5")]
    [InlineData("[[1, 2], [3, \"4\"]]", "sequence 1, position 1", "\"4\"")]
    [InlineData("[[1, 2], 3]", "sequence 1", "Number")]
    [InlineData("{\"ids\": [[1, 2]]}", "eval.json", "JSON array")]
    [InlineData("[]", "eval.json", "no sequence")]
    [InlineData("[[1, 2]", "eval.json", "not valid JSON")]
    public void BadEntriesNameTheFileAndTheIndex(string json, string where, string detail)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("eval.json"), json);

        var e = Assert.Throws<InvalidDataException>(() => EvalData.LoadTokenIds(dir.File("eval.json"), 16));

        Assert.Contains(dir.File("eval.json"), e.Message);
        Assert.Contains(where, e.Message);
        Assert.Contains(detail, e.Message);
    }
}
