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

    public static string Build(RunStatus status, CheckpointManifest manifest, RunPlan plan, long[][] maskedPerPiece, IReadOnlyList<ShardResult> shards, IReadOnlyList<ShardWriteResult> written, double seconds, IReadOnlyDictionary<string, double>? phases = null, IReadOnlyDictionary<string, double>? longestCalls = null)
    {
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
            ["model"] = manifest.Root,
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
            },
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
}
