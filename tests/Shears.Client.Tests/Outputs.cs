namespace Shears.Client.Tests;

/// <summary>Two runs' outputs compared: the same files with the same bytes, shears-report.json aside (it holds timings).</summary>
public static class Outputs
{
    public static void AssertSameFiles(string expected, string actual)
    {
        var names = Directory.GetFiles(expected).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json").Order().ToArray();
        Assert.NotEmpty(names);
        Assert.Equal(names, Directory.GetFiles(actual).Select(f => Path.GetFileName(f)!).Where(f => f != "shears-report.json").Order().ToArray());
        foreach (string name in names)
            Assert.True(File.ReadAllBytes(Path.Combine(expected, name)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actual, name))), $"{name} differs");
    }
}
