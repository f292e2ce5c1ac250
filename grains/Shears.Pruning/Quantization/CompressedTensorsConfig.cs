using System.Text.Json;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// The <c>quantization_config</c> of <c>config.json</c> that compressed-tensors writes for a <c>pack-quantized</c>
/// model (FORMATS.md, from compressed-tensors 0.15): one config group targeting every Linear, integer weights of the
/// scheme's bits, static, minmax observer; no activation quantization; <c>lm_head</c> and any Linear left dense in
/// <c>ignore</c>; status <c>compressed</c>; an empty <c>sparsity_config</c> (sparse formats are no longer read, so
/// the zeros stay inside the packed weights). Keys are sorted, as compressed-tensors' serialization sorts them.
/// </summary>
public static class CompressedTensorsConfig
{
    public const string Format = "pack-quantized", QuantMethod = "compressed-tensors", Version = "0.15.0";

    /// <summary>The quantization_config object for <paramref name="scheme"/>.</summary>
    public static JsonObject Build(QuantScheme scheme, IEnumerable<string> ignore, string? actOrder = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (scheme.DynamicActivations) throw new ArgumentException($"--quantize {scheme.Name} quantizes activations; pack-quantized checkpoints hold {QuantScheme.W8A16}, {QuantScheme.W4A16} or {QuantScheme.W4A16Asym}");
        var weights = new JsonObject
        {
            ["actorder"] = actOrder,
            ["block_structure"] = null,
            ["dynamic"] = false,
            ["group_size"] = scheme.PerChannel ? null : scheme.GroupSize,
            ["num_bits"] = scheme.Bits,
            ["observer"] = "minmax",
            ["observer_kwargs"] = new JsonObject(),
            ["strategy"] = scheme.PerChannel ? "channel" : "group",
            ["symmetric"] = scheme.Symmetric,
            ["type"] = "int",
        };
        var group = new JsonObject
        {
            ["format"] = Format,
            ["input_activations"] = null,
            ["output_activations"] = null,
            ["targets"] = new JsonArray("Linear"),
            ["weights"] = weights,
        };
        var ignored = new JsonArray();
        foreach (string module in ignore.Prepend("lm_head").Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)) ignored.Add(module);
        return new JsonObject
        {
            ["config_groups"] = new JsonObject { ["group_0"] = group },
            ["format"] = Format,
            ["global_compression_ratio"] = null,
            ["ignore"] = ignored,
            ["kv_cache_scheme"] = null,
            ["quant_method"] = QuantMethod,
            ["quantization_status"] = "compressed",
            ["sparsity_config"] = new JsonObject(),
            ["version"] = Version,
        };
    }

    /// <summary><paramref name="configJson"/> (a model's config.json) with its quantization_config set; <paramref name="path"/> names it in errors.</summary>
    public static string AddTo(string configJson, QuantScheme scheme, IEnumerable<string> ignore, string path, string? actOrder = null)
    {
        JsonObject config;
        try { config = JsonNode.Parse(configJson)?.AsObject() ?? throw new JsonException("not an object"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new CheckpointFormatException(path, null, $"config.json is not a JSON object: {e.Message}");
        }
        config["quantization_config"] = Build(scheme, ignore, actOrder);
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Whether a config.json already declares a quantization (a quantized model is not quantized again).</summary>
    public static bool IsQuantized(string configJson)
    {
        try { return JsonNode.Parse(configJson) is JsonObject o && o["quantization_config"] is not null; }
        catch (JsonException) { return false; }
    }
}
