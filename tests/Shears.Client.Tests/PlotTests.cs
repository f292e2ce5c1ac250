using SkiaSharp;
using Shears.Client;
using Shears.Testing;

namespace Shears.Client.Tests;

/// <summary>The demo's plot, drawn from a report: both series are on the image, not only a PNG header.</summary>
public class PlotTests
{
    private const string Report = """
        {"runId":"plot-test","baseline":{"eval":{"metric":"fidelity","value":1.0,"measures":{"neighbourAgreement10":1.0}}},
         "rounds":[
           {"round":1,"achievedSparsity":0.2,"eval":{"metric":"fidelity","value":0.97,"measures":{"neighbourAgreement10":0.9}}},
           {"round":2,"achievedSparsity":0.35,"eval":{"metric":"fidelity","value":0.93,"measures":{"neighbourAgreement10":0.7}}},
           {"round":3,"achievedSparsity":0.5,"eval":{"metric":"fidelity","value":0.88,"measures":{"neighbourAgreement10":0.5}}}]}
        """;

    /// <summary>Pixels within a small distance of the colour (anti-aliasing blends the edges of lines and markers).</summary>
    private static int PixelsNear(SKBitmap bitmap, SKColor colour)
    {
        int count = 0;
        for (int y = 0; y < bitmap.Height; y++)
        {
            for (int x = 0; x < bitmap.Width; x++)
            {
                var p = bitmap.GetPixel(x, y);
                if (Math.Abs(p.Red - colour.Red) + Math.Abs(p.Green - colour.Green) + Math.Abs(p.Blue - colour.Blue) < 30) count++;
            }
        }
        return count;
    }

    [Fact]
    public void BothSeriesAreDrawnAtTheSizeTheDemoWrites()
    {
        using var dir = new TempDir();
        string report = Path.Combine(dir.Path, "shears-report.json");
        File.WriteAllText(report, Report);
        string png = Path.Combine(dir.Path, Demos.PlotFile);
        Demos.Plot(report, png);

        using var bitmap = SKBitmap.Decode(png);
        Assert.NotNull(bitmap);
        Assert.Equal((800, 500), (bitmap.Width, bitmap.Height));
        // The first two colours of the plot's default palette (category 10): fidelity, then neighbour agreement.
        int fidelity = PixelsNear(bitmap, SKColor.Parse("#1f77b4"));
        int agreement = PixelsNear(bitmap, SKColor.Parse("#ff7f0e"));
        Assert.True(fidelity > 80 && agreement > 80, $"series pixels: fidelity {fidelity}, agreement {agreement}");
        Assert.False(File.Exists(png + ".tmp.png"));

        // Without the agreement measure (a decoder's perplexity run) only the first series has points.
        File.WriteAllText(report, Report.Replace(",\"measures\":{\"neighbourAgreement10\":0.9}", "").Replace(",\"measures\":{\"neighbourAgreement10\":0.7}", "")
            .Replace(",\"measures\":{\"neighbourAgreement10\":0.5}", "").Replace(",\"measures\":{\"neighbourAgreement10\":1.0}", ""));
        Demos.Plot(report, png);
        using var second = SKBitmap.Decode(png);
        int alone = PixelsNear(second, SKColor.Parse("#ff7f0e"));
        Assert.True(PixelsNear(second, SKColor.Parse("#1f77b4")) > 80);
        Assert.True(alone < agreement / 3, $"agreement pixels without its points: {alone} (with them {agreement}): only its legend entry is left");
    }

    [Fact]
    public void A_mark_for_the_compressed_model_is_drawn_in_the_third_colour()
    {
        using var dir = new TempDir();
        string report = Path.Combine(dir.Path, "shears-report.json");
        File.WriteAllText(report, Report);
        string png = Path.Combine(dir.Path, Demos.PlotFile);
        var third = SKColor.Parse("#2ca02c");
        Demos.Plot(report, png);
        int without;
        using (var plain = SKBitmap.Decode(png)) without = PixelsNear(plain, third);

        Demos.Plot(report, png, [new Demos.PlotMark(0.5, 0.87, "50% pruned + W8A8 in ONNX Runtime")]);
        using var marked = SKBitmap.Decode(png);
        int with = PixelsNear(marked, third);
        Assert.True(without < 5, $"third-colour pixels without a mark: {without}");
        Assert.True(with > 80, $"third-colour pixels with the mark and its legend entry: {with}");
    }
}
