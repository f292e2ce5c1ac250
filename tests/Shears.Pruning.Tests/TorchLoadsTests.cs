using TorchSharp;

namespace Shears.Pruning.Tests;

public class TorchLoadsTests
{
    [Fact]
    public void NativeLibraryLoadsAndComputes()
    {
        using var a = torch.tensor(new float[] { 1, -2, 3 });
        using var b = a.abs().sum();
        Assert.Equal(6f, b.item<float>());
    }
}
