using System.Text.Json;

namespace Shears.Pruning.Models;

/// <summary>Typed reads of config.json fields; a JSON null counts as absent, as transformers treats it.</summary>
internal sealed class FieldReader(JsonElement obj, string source, string prefix = "")
{
    public string Source => source;

    public string Prefix => prefix;

    private JsonElement? Get(string field) =>
        obj.TryGetProperty(field, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    private LlamaConfigException Wrong(string field, JsonElement value, string expected) =>
        new(source, prefix + field, $"is {Show(value)}; expected {expected}");

    private static string Show(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{value.GetString()}\"",
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        _ => value.GetRawText(),
    };

    public int RequiredPositiveInt(string field) =>
        OptionalPositiveInt(field) ?? throw Missing(field, "a positive integer");

    public int RequiredNonNegativeInt(string field) =>
        OptionalInt(field, 0, "zero or a positive integer") ?? throw Missing(field, "zero or a positive integer");

    public int? OptionalPositiveInt(string field) => OptionalInt(field, 1, "a positive integer");

    public bool Has(string field) => obj.TryGetProperty(field, out _);

    public List<string>? OptionalStrings(string field)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        if (value.ValueKind != JsonValueKind.Array || value.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
        {
            throw Wrong(field, value, "an array of strings");
        }
        return value.EnumerateArray().Select(e => e.GetString()!).ToList();
    }

    public int? OptionalInt(string field, int min, string expected)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        if (value.ValueKind != JsonValueKind.Number)
        {
            throw Wrong(field, value, expected);
        }
        // 4096.0 is an integer written by some exporters.
        if (value.TryGetInt32(out var i) && i >= min)
        {
            return i;
        }
        if (value.TryGetDouble(out var d) && d == Math.Floor(d) && d >= min && d <= int.MaxValue)
        {
            return (int)d;
        }
        throw Wrong(field, value, expected);
    }

    public double RequiredPositiveDouble(string field) =>
        OptionalPositiveDouble(field) ?? throw Missing(field, "a positive number");

    public double? OptionalPositiveDouble(string field)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out var d) || !(d > 0) || !double.IsFinite(d))
        {
            throw Wrong(field, value, "a positive number");
        }
        return d;
    }

    public bool? OptionalBool(string field)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Wrong(field, value, "true or false"),
        };
    }

    public string? OptionalString(string field)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw Wrong(field, value, "a string");
    }

    public JsonElement? OptionalObject(string field)
    {
        if (Get(field) is not { } value)
        {
            return null;
        }
        return value.ValueKind == JsonValueKind.Object ? value : throw Wrong(field, value, "an object");
    }

    private LlamaConfigException Missing(string field, string expected) =>
        new(source, prefix + field, $"is missing; expected {expected}");
}
