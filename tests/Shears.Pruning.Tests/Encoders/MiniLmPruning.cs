using System.Buffers.Binary;
using Shears.Pruning.Onnx;
using Shears.Pruning.Selection;

namespace Shears.Pruning.Tests.Encoders;

/// <summary>
/// Plain magnitude pruning of MiniLM's 36 encoder matrices, written here apart from the code under test: the
/// smallest |w| zeroed, ties by (initializer name ordinal, index), round_half_to_even(s·N) elements.
/// </summary>
internal static class MiniLmPruning
{
    /// <summary>Zeroes the smallest <paramref name="sparsity"/> of each matrix on its own (layer-wise) and writes the model to <paramref name="output"/>.</summary>
    public static void WriteLayerWise(OnnxModel model, string output, double sparsity)
    {
        var replacements = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (var p in model.FindPrunable())
        {
            var values = Floats(model, p.Name);
            var keys = new ulong[values.Length];
            for (var i = 0; i < values.Length; i++)
            {
                keys[i] = (ulong)AbsBits(values[i]) << 32 | (uint)i;
            }
            Array.Sort(keys);
            var count = Counts.Target(sparsity, values.Length);
            for (var r = 0; r < count; r++)
            {
                values[(int)(uint)keys[r]] = 0f;
            }
            replacements[p.Name] = Bytes(values);
        }
        model.WriteWithReplacedData(output, replacements);
    }

    /// <summary>Zeroes the globally smallest <paramref name="sparsity"/> across the matrices and writes the model to <paramref name="output"/>.</summary>
    public static void WriteGlobal(OnnxModel model, string output, double sparsity)
    {
        var matrices = model.FindPrunable().Select(p => p.Name).Order(StringComparer.Ordinal).ToArray();
        var values = matrices.Select(name => Floats(model, name)).ToArray();
        var total = values.Sum(v => (long)v.Length);
        var keys = new ulong[total];
        long at = 0;
        for (var t = 0; t < values.Length; t++)
        {
            for (var i = 0; i < values[t].Length; i++)
            {
                // |w| bits (31), tensor ordinal (8), index (24): sorting the keys sorts by the tie rule.
                keys[at++] = (ulong)AbsBits(values[t][i]) << 32 | (ulong)t << 24 | (uint)i;
            }
        }
        Array.Sort(keys);
        var count = Counts.Target(sparsity, total);
        for (long r = 0; r < count; r++)
        {
            var key = keys[r];
            values[(int)(key >> 24 & 0xFF)][(int)(key & 0xFFFFFF)] = 0f;
        }
        model.WriteWithReplacedData(output, matrices.Select((name, t) => (name, t)).ToDictionary(x => x.name, x => Bytes(values[x.t]), StringComparer.Ordinal));
    }

    private static uint AbsBits(float value) => BitConverter.SingleToUInt32Bits(value) & 0x7FFF_FFFF;

    public static float[] Floats(OnnxModel model, string name)
    {
        var bytes = model.ReadRawData(name);
        var values = new float[bytes.Length / 4];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(4 * i));
        }
        return values;
    }

    private static byte[] Bytes(float[] values)
    {
        var bytes = new byte[values.Length * 4];
        for (var i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]);
        }
        return bytes;
    }
}
