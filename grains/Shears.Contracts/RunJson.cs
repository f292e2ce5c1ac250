using System.Text.Json;
using System.Text.Json.Serialization;

namespace Shears.Contracts;

/// <summary>
/// How runs' specs and statuses read and write as JSON wherever they cross HTTP or reach a user: camelCase names,
/// enums as camelCase strings, and infinities as "Infinity" (--norm inf).
/// </summary>
public static class RunJson
{
    public static JsonSerializerOptions Options { get; } = Create(indented: false);

    /// <summary>The same, indented: what `shears status --json` prints.</summary>
    public static JsonSerializerOptions Indented { get; } = Create(indented: true);

    // The types a client sends and reads have generated metadata (RunJsonTypes): a command's first request builds no
    // serializer by reflection. Other types fall back to reflection, with the same names and numbers.
    private static JsonSerializerOptions Create(bool indented) => new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = indented,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        TypeInfoResolver = System.Text.Json.Serialization.Metadata.JsonTypeInfoResolver.Combine(RunJsonTypes.Default, new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver()),
    };
}

[JsonSerializable(typeof(RunSpec))]
[JsonSerializable(typeof(RunStatus))]
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
internal sealed partial class RunJsonTypes : JsonSerializerContext;
