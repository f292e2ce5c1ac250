using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Shears.Contracts;
using Shears.Pruning.Checkpoints;

namespace Shears.Grains.Runs;

/// <summary>Builds shears-report.json (field names and layout as the README documents).</summary>
public static class RunReport
{
    public const string FileName = "shears-report.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Build(RunStatus status, CheckpointManifest manifest, RunPlan plan, long[][] maskedPerPiece, IReadOnlyList<ShardResult> shards, IReadOnlyList<ShardWriteResult> written, double seconds, IReadOnlyDictionary<string, double>? phases = null, IReadOnlyDictionary<string, double>? longestCalls = null, IReadOnlyDictionary<string, long>? outputFiles = null, CheckpointManifest? input = null, JsonObject? removal = null)
    {
        // A quantized --model is read through its dense copy (manifest); the report names and measures what was given.
        input ??= manifest;
        var maskedByTensor = new Dictionary<string, long>(StringComparer.Ordinal);
        for (int s = 0; s < plan.Shards.Count; s++)
            for (int p = 0; p < plan.Shards[s].Pieces.Count; p++)
            {
                string name = plan.Shards[s].Pieces[p].Tensor;
                maskedByTensor[name] = maskedByTensor.GetValueOrDefault(name) + maskedPerPiece[s][p];
            }

        var tensors = plan.Prunable.Select(name =>
        {
            var t = manifest.Get(name);
            long masked = maskedByTensor.GetValueOrDefault(name);
            return new JsonObject
            {
                ["name"] = name,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["dtype"] = t.DType.ToString(),
                ["elements"] = t.ElementCount,
                ["maskedWeights"] = masked,
                ["sparsity"] = t.ElementCount == 0 ? 0 : (double)masked / t.ElementCount,
            };
        });

        long masked = maskedByTensor.Values.Sum();
        long prunableBytes = plan.Prunable.Sum(n => manifest.Get(n).ByteLength);
        var report = new JsonObject
        {
            ["runId"] = status.RunId,
            ["status"] = status.State.ToString().ToLowerInvariant(),
            ["spec"] = JsonSerializer.SerializeToNode(status.Spec, Json),
            ["model"] = input.Root,
            ["prunableWeights"] = plan.PrunableWeights,
            ["maskedWeights"] = masked,
            ["sparsity"] = plan.PrunableWeights == 0 ? 0 : (double)masked / plan.PrunableWeights,
            ["size"] = new JsonObject
            {
                ["checkpointBytes"] = manifest.TotalBytes,
                ["prunableBytes"] = prunableBytes,
                ["prunableSparseBytes"] = written.Sum(w => w.SparseBytes),
                ["prunableZeroElements"] = written.Sum(w => w.ZeroElements),
                ["prunableZeroFraction"] = plan.PrunableWeights == 0 ? 0 : (double)written.Sum(w => w.ZeroElements) / plan.PrunableWeights,
                ["inputBytes"] = InputBytes(input),
                ["outputBytes"] = outputFiles?.Values.Sum(),
                ["outputRatio"] = outputFiles is null ? null : (double)outputFiles.Values.Sum() / InputBytes(input),
            },
            ["quantization"] = Quantization(status, plan, manifest, outputFiles),
            ["removal"] = removal,
            ["baseline"] = status.Baseline is { } b ? new JsonObject { ["eval"] = JsonSerializer.SerializeToNode(b, Json) } : null,
            ["rounds"] = JsonSerializer.SerializeToNode(status.Rounds, Json),
            ["tensors"] = new JsonArray(tensors.ToArray<JsonNode>()),
            ["shards"] = JsonSerializer.SerializeToNode(shards, Json),
            ["startedAt"] = status.StartedAt,
            ["finishedAt"] = status.FinishedAt,
            ["seconds"] = seconds,
            ["phaseSeconds"] = phases is null ? null : JsonSerializer.SerializeToNode(phases, Json),
            ["longestCallSeconds"] = longestCalls is null ? null : JsonSerializer.SerializeToNode(longestCalls, Json),
        };
        return report.ToJsonString(Json);
    }

    /// <summary>The input's bytes on disk: its checkpoint files, index and companion files.</summary>
    public static long InputBytes(CheckpointManifest manifest) =>
        manifest.Files.Sum(f => f.FileLength)
        + manifest.CompanionFiles.Append(manifest.IndexFileName).OfType<string>().Sum(f => Shears.Pruning.ModelFiles.LengthOf(manifest.PathOf(f)));

    /// <summary>The output folder's files and their bytes (the report excluded: it is written after).</summary>
    public static IReadOnlyDictionary<string, long> OutputFiles(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => (Name: Path.GetRelativePath(folder, f), Bytes: new FileInfo(f).Length))
            .Where(f => f.Name != FileName).OrderBy(f => f.Name, StringComparer.Ordinal)
            .ToDictionary(f => f.Name, f => f.Bytes, StringComparer.Ordinal);

    private static JsonObject? Quantization(RunStatus status, RunPlan plan, CheckpointManifest manifest, IReadOnlyDictionary<string, long>? outputFiles)
    {
        if (status.Spec is not { Quantize: { } scheme } spec) return null;
        var errors = status.Rounds.LastOrDefault()?.Quantized ?? [];
        bool grouped = scheme is RunOptions.QuantSchemes.W4A16 or RunOptions.QuantSchemes.W4A16Asym;
        return new JsonObject
        {
            ["scheme"] = scheme,
            ["method"] = spec.QuantMethod,
            ["groupSize"] = grouped ? spec.GroupSize : null,
            ["actOrder"] = spec.QuantMethod == RunOptions.QuantMethods.Gptq ? spec.ActOrder : null,
            // GPTQ in the same sweep as the last round's SparseGPT pruning, or on its own after the masks were final.
            ["joint"] = spec.QuantMethod == RunOptions.QuantMethods.Gptq ? spec.JointQuantization : null,
            ["format"] = manifest.Format == CheckpointFormat.Safetensors ? "compressed-tensors pack-quantized" : "onnx",
            ["quantizedWeights"] = plan.Quantized.Sum(n => manifest.Get(n).ElementCount),
            ["meanAbsError"] = errors.Sum(e => e.Elements) == 0 ? null : errors.Sum(e => e.AbsErrorSum) / errors.Sum(e => e.Elements),
            ["maxAbsError"] = errors.Count == 0 ? null : errors.Max(e => e.MaxAbsError),
            ["tensors"] = new JsonArray(errors.Select(e => (JsonNode)new JsonObject
            {
                ["name"] = e.Name, ["elements"] = e.Elements, ["meanAbsError"] = e.MeanAbsError, ["maxAbsError"] = e.MaxAbsError,
            }).ToArray()),
            ["files"] = outputFiles is null ? null : new JsonArray(outputFiles.Select(f => (JsonNode)new JsonObject { ["name"] = f.Key, ["bytes"] = f.Value }).ToArray()),
        };
    }
}
