namespace Shears.Grains;

/// <summary>The grain storage name Shears persists run state under; hosts register a provider by this name.</summary>
public static class ShearsStorage
{
    public const string Name = "shears";
}
