using Shears.Pruning.Checkpoints;

namespace Shears.Testing;

/// <summary>
/// The semantics written out the plain way: score every prunable weight, sort by (|w|, global
/// position), mask the first round_half_to_even(s × N), zero them in a copy of the input files.
/// </summary>
public static class ReferencePruner
{
    public static bool DefaultPrunable(TensorEntry t) =>
        t.Shape.Length == 2 && t.DType.IsPrunable() && t.Name.StartsWith("model.layers.", StringComparison.Ordinal)
        && t.Name.EndsWith("_proj.weight", StringComparison.Ordinal);

    public static float Magnitude(byte[] raw, TensorDType dtype, long i) => dtype switch
    {
        TensorDType.BF16 => Math.Abs(FloatBits.BFloat16ToSingle(BitConverter.ToUInt16(raw, (int)i * 2))),
        TensorDType.F16 => Math.Abs(FloatBits.HalfToSingle(BitConverter.ToUInt16(raw, (int)i * 2))),
        _ => Math.Abs(BitConverter.ToSingle(raw, (int)i * 4)),
    };

    /// <summary>Expected masks per prunable tensor for a global or layer-wise magnitude run.</summary>
    public static Dictionary<string, bool[]> Masks(CheckpointManifest manifest, double sparsity, bool global)
    {
        var prunable = manifest.Tensors.Where(DefaultPrunable).ToList(); // already in ordinal name order
        var data = prunable.ToDictionary(t => t.Name, t => CheckpointReader.ReadTensor(manifest, t));
        var masks = prunable.ToDictionary(t => t.Name, t => new bool[t.ElementCount]);
        var groups = global ? [prunable] : prunable.Select(t => new List<TensorEntry> { t }).ToList();
        foreach (var group in groups)
        {
            var all = new List<(float Score, int Tensor, long Index)>();
            for (int ti = 0; ti < group.Count; ti++)
                for (long i = 0; i < group[ti].ElementCount; i++)
                    all.Add((Magnitude(data[group[ti].Name], group[ti].DType, i), ti, i));
            all.Sort((a, b) => a.Score != b.Score ? a.Score.CompareTo(b.Score) : a.Tensor != b.Tensor ? a.Tensor.CompareTo(b.Tensor) : a.Index.CompareTo(b.Index));
            long k = (long)Math.Round(sparsity * all.Count, MidpointRounding.ToEven);
            for (int j = 0; j < k; j++) masks[group[all[j].Tensor].Name][all[j].Index] = true;
        }
        return masks;
    }

    /// <summary>Asserts that every file of <paramref name="output"/> is the input with exactly these masks applied as +0.0.</summary>
    public static void AssertOutput(string input, string output, Dictionary<string, bool[]> masks)
    {
        var manifest = CheckpointReader.ReadManifest(input);
        var inputFiles = Directory.GetFiles(input).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        var outputFiles = Directory.GetFiles(output).Select(Path.GetFileName).Where(f => f != "shears-report.json").Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(inputFiles, outputFiles);
        foreach (string? file in inputFiles)
        {
            var expected = File.ReadAllBytes(Path.Combine(input, file!));
            foreach (var t in manifest.Tensors.Where(t => t.FileName == file && masks.ContainsKey(t.Name)))
            {
                int size = t.DType.ElementSize();
                var mask = masks[t.Name];
                for (long i = 0; i < mask.Length; i++)
                    if (mask[i]) Array.Clear(expected, (int)(t.FileOffset + i * size), size);
            }
            var actual = File.ReadAllBytes(Path.Combine(output, file!));
            Assert.Equal(expected.Length, actual.Length);
            int firstDiff = Enumerable.Range(0, expected.Length).FirstOrDefault(i => expected[i] != actual[i], -1);
            Assert.True(firstDiff < 0, $"{file}: first differing byte at {firstDiff}");
        }
    }
}
