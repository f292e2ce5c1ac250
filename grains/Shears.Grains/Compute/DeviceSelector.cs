using TorchSharp;

namespace Shears.Grains.Compute;

/// <summary>Turns the configured device name into a TorchSharp device, once, at the edge.</summary>
public static class DeviceSelector
{
    public static torch.Device Resolve(string configured)
    {
        string name = (configured ?? "auto").Trim().ToLowerInvariant();
        if (name is "" or "auto") return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
        if (name == "cpu") return torch.CPU;
        if (name.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
                throw new InvalidOperationException($"Shears:Device is '{configured}' but this build or machine has no CUDA backend (build with -p:ShearsTorchBackend=cuda on a GPU node)");
            return torch.device(name);
        }
        throw new ArgumentException($"Shears:Device must be auto, cpu or cuda[:N], got '{configured}'");
    }
}

/// <summary>This silo's device, resolved once from Shears:Device.</summary>
public sealed class ComputeDevice(Microsoft.Extensions.Options.IOptions<ShearsOptions> options)
{
    private readonly Lazy<torch.Device> _device = new(() => DeviceSelector.Resolve(options.Value.Device));
    public torch.Device Device => _device.Value;
}
