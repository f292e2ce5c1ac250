using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>
/// Reading compressed-tensors checkpoints back dense, on bytes written here by hand from the format's definition
/// (FORMATS.md): int4 fields offset by 8, the lowest column in the lowest bits, zero-padded; zero points packed along
/// the rows; int-quantized as plain int8.
/// </summary>
public class DequantizerTests
{
    private static byte[] Ints(params int[] words) => MemoryMarshal.AsBytes(words.AsSpan()).ToArray();
    private static byte[] Longs(params long[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
    private static byte[] Bf16(params ushort[] bits) => MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
    private static byte[] F32(params float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
    private static byte[] I8(params sbyte[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static void Checkpoint(string dir, JsonObject weights, string format, params (string, TensorDType, long[], byte[])[] tensors)
    {
        Directory.CreateDirectory(dir);
        using (var writer = new SafetensorsWriter(Path.Combine(dir, "model.safetensors"), tensors.Select(t => (t.Item1, t.Item2, t.Item3)).ToArray()))
        {
            foreach (var t in tensors) writer.WriteTensor(t.Item1, t.Item4);
            writer.Complete();
        }
        var config = new JsonObject
        {
            ["model_type"] = "llama",
            ["quantization_config"] = new JsonObject
            {
                ["quant_method"] = "compressed-tensors", ["format"] = format,
                ["config_groups"] = new JsonObject { ["group_0"] = new JsonObject { ["format"] = format, ["targets"] = new JsonArray("Linear"), ["weights"] = weights } },
            },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
    }

    private static JsonObject Weights(int bits, bool symmetric, int? group) => new()
    {
        ["num_bits"] = bits, ["type"] = "int", ["symmetric"] = symmetric, ["strategy"] = group is null ? "channel" : "group", ["group_size"] = group,
    };

    private static float[] Dense(string dir, string name)
    {
        var m = CheckpointReader.ReadManifest(dir);
        var t = m.Get(name);
        return QuantizedRows.Widen(CheckpointReader.ReadTensor(m, t), t.DType, t.ElementCount, name);
    }

    // A [2, 10] int4 weight in groups of 8 (the second group of each row is two columns long):
    // row 0: q = 1 −1 0 7 −8 2 3 −3 | 5 −5 → fields 9 7 8 F 0 A B 5 | D 3 → words 0x5BA0F879, 0x0000003D;
    // row 1: q = 0 ×8 | −8 7        → fields 8 ×8 | 0 F            → words 0x88888888, 0x000000F0.
    private static readonly int[] PackedRows = [0x5BA0F879, 0x0000003D, unchecked((int)0x88888888), 0x000000F0];
    // Scales (bf16): row 0: 0.5 (0x3F00), 0.25 (0x3E80); row 1: 1.0 (0x3F80), 2.0 (0x4000).
    private static readonly ushort[] Scales = [0x3F00, 0x3E80, 0x3F80, 0x4000];

    [Fact]
    public void A_hand_packed_symmetric_int4_weight_reads_back_as_worked_out()
    {
        using var dir = new TempDir();
        Checkpoint(dir.Sub("q"), Weights(4, true, 8), "pack-quantized",
            ("model.embed_tokens.weight", TensorDType.F32, [2, 2], F32(1, 2, 3, 4)),
            ("model.layers.0.mlp.up_proj.weight_packed", TensorDType.I32, [2, 2], Ints(PackedRows)),
            ("model.layers.0.mlp.up_proj.weight_scale", TensorDType.BF16, [2, 2], Bf16(Scales)),
            ("model.layers.0.mlp.up_proj.weight_shape", TensorDType.I64, [2], Longs(2, 10)));
        Assert.Equal(["model.layers.0.mlp.up_proj"], Dequantizer.Write(dir.Sub("q"), dir.Sub("dense")));

        var m = CheckpointReader.ReadManifest(dir.Sub("dense"));
        Assert.Equal(["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"], m.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
        var up = m.Get("model.layers.0.mlp.up_proj.weight");
        Assert.Equal(TensorDType.BF16, up.DType);
        Assert.Equal([2L, 10], up.Shape);
        Assert.Equal([0.5f, -0.5f, 0, 3.5f, -4, 1, 1.5f, -1.5f, 1.25f, -1.25f, 0, 0, 0, 0, 0, 0, 0, 0, -16, 14], Dense(dir.Sub("dense"), up.Name));
        Assert.Equal([1f, 2, 3, 4], Dense(dir.Sub("dense"), "model.embed_tokens.weight"));
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("dense"), "config.json")))!["quantization_config"]);
        Assert.Equal("llama", (string)JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("dense"), "config.json")))!["model_type"]!);
    }

    [Fact]
    public void Packed_zero_points_are_read_along_the_rows()
    {
        // Zero points: row 0: 1, −2; row 1: 0, 3 → fields 9, 6 and 8, B; word (0, g) holds row 0 in bits 0–3, row 1 in 4–7.
        using var dir = new TempDir();
        Checkpoint(dir.Sub("q"), Weights(4, false, 8), "pack-quantized",
            ("m.weight_packed", TensorDType.I32, [2, 2], Ints(PackedRows)),
            ("m.weight_scale", TensorDType.BF16, [2, 2], Bf16(Scales)),
            ("m.weight_zero_point", TensorDType.I32, [1, 2], Ints(0x89, 0xB6)),
            ("m.weight_shape", TensorDType.I64, [2], Longs(2, 10)));
        Dequantizer.Write(dir.Sub("q"), dir.Sub("dense"));
        Assert.Equal([0f, -1, -0.5f, 3, -4.5f, 0.5f, 1, -2, 1.75f, -0.75f, 0, 0, 0, 0, 0, 0, 0, 0, -22, 8], Dense(dir.Sub("dense"), "m.weight"));
    }

    [Fact]
    public void A_group_index_picks_each_columns_scale()
    {
        using var dir = new TempDir();
        // Columns 0–7 in group 1 and 8–9 in group 0: the scales of each row are swapped against the plain order.
        Checkpoint(dir.Sub("q"), Weights(4, true, 8), "pack-quantized",
            ("m.weight_packed", TensorDType.I32, [2, 2], Ints(PackedRows)),
            ("m.weight_scale", TensorDType.BF16, [2, 2], Bf16(Scales)),
            ("m.weight_shape", TensorDType.I64, [2], Longs(2, 10)),
            ("m.weight_g_idx", TensorDType.I32, [10], Ints(1, 1, 1, 1, 1, 1, 1, 1, 0, 0)));
        Dequantizer.Write(dir.Sub("q"), dir.Sub("dense"));
        Assert.Equal([0.25f, -0.25f, 0, 1.75f, -2, 0.5f, 0.75f, -0.75f, 2.5f, -2.5f, 0, 0, 0, 0, 0, 0, 0, 0, -8, 7], Dense(dir.Sub("dense"), "m.weight"));
    }

    [Fact]
    public void Int_quantized_weights_and_zero_points_are_plain_int8()
    {
        using var dir = new TempDir();
        Checkpoint(dir.Sub("q"), Weights(8, false, null), "int-quantized",
            ("m.weight", TensorDType.I8, [2, 3], I8(-128, 0, 127, 5, -5, 1)),
            ("m.weight_scale", TensorDType.F32, [2, 1], F32(0.5f, 0.25f)),
            ("m.weight_zero_point", TensorDType.I8, [2, 1], I8(-1, 2)),
            ("lm_head.weight", TensorDType.F32, [1, 3], F32(7, 8, 9)));
        Assert.Equal(["m"], Dequantizer.Write(dir.Sub("q"), dir.Sub("dense")));
        Assert.Equal([-63.5f, 0.5f, 64, 0.75f, -1.75f, -0.25f], Dense(dir.Sub("dense"), "m.weight"));
        Assert.Equal([7f, 8, 9], Dense(dir.Sub("dense"), "lm_head.weight"));
    }

    [Theory]
    [InlineData("float-quantized", "format")]
    [InlineData("missing-scale", "m.weight_scale")]
    [InlineData("bad-shape", "m.weight_packed")]
    [InlineData("no-zero-point", "m.weight_zero_point")]
    public void Malformed_checkpoints_are_refused_naming_the_field_or_tensor_and_nothing_is_written(string fault, string named)
    {
        using var dir = new TempDir();
        var tensors = new List<(string, TensorDType, long[], byte[])> { ("m.weight_packed", TensorDType.I32, [2, 2], Ints(PackedRows)), ("m.weight_shape", TensorDType.I64, [2], Longs(2, fault == "bad-shape" ? 20 : 10)) };
        if (fault != "missing-scale") tensors.Add(("m.weight_scale", TensorDType.BF16, [2, 2], Bf16(Scales)));
        Checkpoint(dir.Sub("q"), Weights(4, fault != "no-zero-point", 8), fault == "float-quantized" ? "float-quantized" : "pack-quantized", tensors.ToArray());
        var error = Assert.Throws<CheckpointFormatException>(() => { Dequantizer.Write(dir.Sub("q"), dir.Sub("dense")); });
        Assert.Contains(named, error.Message);
        Assert.False(Directory.Exists(dir.Sub("dense")) && Directory.EnumerateFileSystemEntries(dir.Sub("dense")).Any());
        Assert.Empty(Directory.GetDirectories(dir.Path, ".*"));
    }
}
