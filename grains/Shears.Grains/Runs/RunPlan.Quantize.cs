using Shears.Contracts;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;

namespace Shears.Grains.Runs;

// Which tensors --quantize takes, and the schemes a model's format can hold: refused before the run, naming the option.
public static partial class RunPlanner
{
    private static IReadOnlyList<string> QuantizedTensors(CheckpointManifest manifest, RunSpec spec, IReadOnlyList<TensorEntry> prunable)
    {
        if (spec.Quantize is not { } name) return [];
        var scheme = QuantScheme.Parse(name, spec.GroupSize);
        if (manifest.Format == CheckpointFormat.Onnx) return OnnxQuantized(manifest, spec, scheme, prunable);
        if (scheme.DynamicActivations)
            throw new RunRejectedException($"--quantize {name} quantizes activations at run time, which only ONNX models hold; for a safetensors checkpoint use {QuantScheme.W8A16}, {QuantScheme.W4A16} or {QuantScheme.W4A16Asym}");
        // The Linear weights of the blocks (what compressed-tensors' "Linear" target takes); anything else included for
        // pruning stays in its dtype.
        var quantized = prunable.Where(t => IsDefaultPrunable(t) && t.Name.EndsWith(".weight", StringComparison.Ordinal)).Select(t => t.Name).ToArray();
        if (quantized.Length == 0)
            throw new RunRejectedException($"--quantize {name}: no Linear weight of the blocks ('*.weight', 2-D) is among the tensors of {manifest.Root} the run takes");
        return quantized;
    }

    private static void RefuseQuantizedInput(CheckpointManifest manifest, RunSpec spec)
    {
        if (!IsQuantized(manifest, out string why)) return;
        throw new RunRejectedException(spec.Quantize is { } name
            ? $"--quantize {name}: {manifest.Root} is already quantized ({why}); quantize a dense checkpoint (without --quantize a quantized model is read back dequantized)"
            : $"--model {manifest.Root} is quantized ({why}); reading quantized checkpoints back is not supported yet: give the dense checkpoint");
    }

    /// <summary>ONNX: W8A8 or W4A16 (MatMulNBits' block size is a power of 2, at least 16), for the prunable weights that MatMuls read.</summary>
    private static IReadOnlyList<string> OnnxQuantized(CheckpointManifest manifest, RunSpec spec, QuantScheme scheme, IReadOnlyList<TensorEntry> prunable)
    {
        if (scheme.Name is not (QuantScheme.W8A8 or QuantScheme.W4A16))
            throw new RunRejectedException($"--quantize {scheme.Name} writes compressed-tensors checkpoints; an ONNX model ({manifest.Root}) is quantized as {QuantScheme.W8A8} or {QuantScheme.W4A16}");
        if (scheme.Name == QuantScheme.W4A16 && (spec.GroupSize < 16 || (spec.GroupSize & (spec.GroupSize - 1)) != 0))
            throw new RunRejectedException($"--group-size {spec.GroupSize}: ONNX Runtime's MatMulNBits takes a block size that is a power of 2, at least 16");
        // The graph is rewritten from the written weights after the shards wrote them, rounding them to nearest there.
        if (spec.QuantMethod == RunOptions.QuantMethods.Gptq)
            throw new RunRejectedException($"--quant-method gptq writes compressed-tensors checkpoints; an ONNX model ({manifest.Root}) is quantized with --quant-method rtn");
        var model = Shears.Pruning.Onnx.OnnxModel.Read(manifest.PathOf(manifest.Files[0].FileName));
        var matMulWeights = model.FindPrunable(includeOutsideLayers: true).Where(p => p.OpType == "MatMul").Select(p => p.Initializer.Name).ToHashSet(StringComparer.Ordinal);
        var quantized = prunable.Where(t => matMulWeights.Contains(t.Name) && t.DType == TensorDType.F32 && t.Shape.Length == 2).Select(t => t.Name).ToArray();
        if (quantized.Length == 0)
            throw new RunRejectedException($"--quantize {scheme.Name}: none of the tensors the run takes from {manifest.Root} is the float weight of a MatMul");
        return quantized;
    }

    /// <summary>
    /// Whether a run that quantizes the whole model takes this tensor as a quantized Linear weight: with --remove the
    /// smaller model is quantized whole, so the stages compute with these weights dequantized whether pruned or not.
    /// </summary>
    public static bool IsQuantizedLinear(CheckpointManifest manifest, TensorEntry t) =>
        manifest.Format == CheckpointFormat.Onnx
            ? manifest.DefaultPrunable?.Contains(t.Name) == true && t.DType == TensorDType.F32 && t.Shape.Length == 2
            : IsDefaultPrunable(t) && t.Name.EndsWith(".weight", StringComparison.Ordinal);

    /// <summary>
    /// The tensors of the smaller model that --remove with --quantize quantizes: those a run given it as --model with
    /// --sparsity 0 and the same --quantize takes.
    /// </summary>
    public static IReadOnlyList<string> QuantizedWhole(CheckpointManifest removed, RunSpec spec)
    {
        var whole = new RunSpec { ModelPath = removed.Root, OutputPath = spec.OutputPath, Sparsity = 0, Quantize = spec.Quantize, GroupSize = spec.GroupSize };
        return QuantizedTensors(removed, whole, SelectPrunable(removed, whole));
    }

    /// <summary>Linear weights of the blocks that stay dense: the config's <c>ignore</c> list names their modules.</summary>
    public static IEnumerable<string> UnquantizedLinears(CheckpointManifest manifest, IReadOnlyCollection<string> quantized)
    {
        var set = quantized.ToHashSet(StringComparer.Ordinal);
        return manifest.Tensors.Where(t => IsDefaultPrunable(t) && t.Name.EndsWith(".weight", StringComparison.Ordinal) && !set.Contains(t.Name))
            .Select(t => QuantizedLayout.Module(t.Name));
    }

    /// <summary>Whether the checkpoint is quantized: by its tensors' names or types, or its config's quantization_config.</summary>
    internal static bool IsQuantized(CheckpointManifest manifest, out string why)
    {
        var packed = manifest.Tensors.FirstOrDefault(t => t.Name.EndsWith(QuantizedLayout.PackedSuffix, StringComparison.Ordinal)
                                                          || t.Name.EndsWith(QuantizedLayout.ScaleSuffix, StringComparison.Ordinal));
        if (packed is not null) { why = $"it holds '{packed.Name}'"; return true; }
        string config = Path.Combine(manifest.Root, "config.json");
        if (File.Exists(config) && CompressedTensorsConfig.IsQuantized(File.ReadAllText(config))) { why = "config.json has a quantization_config"; return true; }
        if (manifest.Tensors.Any(t => t.DType is TensorDType.I8 or TensorDType.U8 && t.Shape.Length == 2 && IsDefaultPrunable(t with { DType = TensorDType.F32 })))
        { why = "its block weights are 8-bit integers"; return true; }
        why = "";
        return false;
    }
}
