using System.Text.Json.Nodes;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Quantization;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Quantization;

/// <summary>
/// compressed-tensors checkpoints built byte by byte from the format's definition (not by Shears' writer), read back
/// dequantized: the expected floats are worked by hand, so reader and writer cannot share a wrong bit order.
/// </summary>
public class DequantizedCheckpointTests
{
    private const string Module = "model.layers.0.mlp.up_proj";

    private static byte[] Words(params uint[] words) => words.SelectMany(BitConverter.GetBytes).ToArray();
    private static byte[] Halves(params ushort[] bits) => bits.SelectMany(BitConverter.GetBytes).ToArray();
    private static byte[] Longs(params long[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    private static void WriteCheckpoint(string dir, JsonObject weights, string format, params (string Name, TensorDType DType, long[] Shape, byte[] Data)[] tensors)
    {
        using (var writer = new SafetensorsWriter(Path.Combine(dir, "model.safetensors"), tensors.Select(t => (t.Name, t.DType, t.Shape)).ToArray()))
        {
            foreach (var t in tensors) writer.WriteTensor(t.Name, t.Data);
            writer.Complete();
        }
        var config = new JsonObject
        {
            ["model_type"] = "llama",
            ["quantization_config"] = new JsonObject
            {
                ["quant_method"] = "compressed-tensors", ["format"] = format, ["quantization_status"] = "compressed",
                ["config_groups"] = new JsonObject { ["group_0"] = new JsonObject { ["targets"] = new JsonArray("Linear"), ["weights"] = weights, ["input_activations"] = null } },
                ["ignore"] = new JsonArray("lm_head"), ["kv_cache_scheme"] = null, ["sparsity_config"] = new JsonObject(),
            },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
    }

    private static JsonObject Weights(int bits, bool symmetric, int? groupSize) => new()
    {
        ["num_bits"] = bits, ["type"] = "int", ["symmetric"] = symmetric, ["dynamic"] = false,
        ["strategy"] = groupSize is null ? "channel" : "group", ["group_size"] = groupSize,
    };

    private static float[] ReadBack(string input, string output, string name)
    {
        var read = DequantizedCheckpoint.Read(CheckpointReader.ReadManifest(input));
        read.Write(output);
        var m = CheckpointReader.ReadManifest(output);
        var t = m.Get(name);
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!["quantization_config"]);
        return QuantizedRows.Widen(CheckpointReader.ReadTensor(m, t), t.DType, t.ElementCount, name);
    }

    /// <summary>
    /// W4A16_ASYM, groups of 8 over 10 columns (the second group short). q, row 0: −8…−1, 0, 7; row 1: 7…0, −1, −8.
    /// Each value + 8 is a nibble, column j of a word in bits 4j: row 0 packs to 0x76543210 and 0xF8, row 1 to
    /// 0x89ABCDEF and 0x07. Zero points [[1, −2], [0, 3]] + 8 packed along rows: group 0 holds 9 (row 0) | 8 (row 1) « 4
    /// = 0x89, group 1 holds 6 | 11 « 4 = 0xB6. Scales (bf16) [[0.5, 2], [0.25, 1]]. w = (q − zp) · scale.
    /// </summary>
    [Fact]
    public void PackQuantizedAsymmetricGroupsDecodeToTheHandWorkedFloats()
    {
        using var dir = new TempDir();
        WriteCheckpoint(dir.Sub("in"), Weights(4, symmetric: false, groupSize: 8), "pack-quantized",
            (Module + ".weight_packed", TensorDType.I32, [2, 2], Words(0x76543210, 0xF8, 0x89ABCDEF, 0x07)),
            (Module + ".weight_scale", TensorDType.BF16, [2, 2], Halves(0x3F00, 0x4000, 0x3E80, 0x3F80)),
            (Module + ".weight_zero_point", TensorDType.I32, [1, 2], Words(0x89, 0xB6)),
            (Module + ".weight_shape", TensorDType.I64, [2], Longs(2, 10)),
            ("model.norm.weight", TensorDType.BF16, [2], Halves(0x3F80, 0x4000)));
        var w = ReadBack(dir.Sub("in"), dir.Sub("out"), Module + ".weight");
        float[] expected =
        [
            -4.5f, -4f, -3.5f, -3f, -2.5f, -2f, -1.5f, -1f, 4f, 18f,
            1.75f, 1.5f, 1.25f, 1f, 0.75f, 0.5f, 0.25f, 0f, -4f, -11f,
        ];
        Assert.Equal(expected, w);
        var m = CheckpointReader.ReadManifest(dir.Sub("out"));
        Assert.Equal(["model.layers.0.mlp.up_proj.weight", "model.norm.weight"], m.Tensors.Select(t => t.Name));
        Assert.Equal(TensorDType.BF16, m.Get(Module + ".weight").DType);
        Assert.Equal(Halves(0x3F80, 0x4000), CheckpointReader.ReadTensor(m, m.Get("model.norm.weight")));
    }

    /// <summary>Symmetric int4 in groups of 2 with an activation-order index [1, 0, 1, 0]: q 1, 2, 3, 4 (nibbles 9…12 = 0xCBA9), scales [0.5, 3].</summary>
    [Fact]
    public void AGroupIndexPicksEachColumnsScale()
    {
        using var dir = new TempDir();
        WriteCheckpoint(dir.Sub("in"), Weights(4, symmetric: true, groupSize: 2), "pack-quantized",
            (Module + ".weight_packed", TensorDType.I32, [1, 1], Words(0xCBA9)),
            (Module + ".weight_scale", TensorDType.F32, [1, 2], [.. BitConverter.GetBytes(0.5f), .. BitConverter.GetBytes(3f)]),
            (Module + ".weight_shape", TensorDType.I64, [2], Longs(1, 4)),
            (Module + ".weight_g_idx", TensorDType.I32, [4], Words(1, 0, 1, 0)));
        Assert.Equal([3f, 1f, 9f, 2f], ReadBack(dir.Sub("in"), dir.Sub("out"), Module + ".weight"));
    }

    /// <summary>int-quantized W8A16 per channel: int8 bytes 0x80 0x00 0x7F | 0x01 0xFF 0x05, fp16 scales 0.5 and 0.125.</summary>
    [Fact]
    public void IntQuantizedChannelsDecodeToTheHandWorkedFloats()
    {
        using var dir = new TempDir();
        WriteCheckpoint(dir.Sub("in"), Weights(8, symmetric: true, groupSize: null), "int-quantized",
            (Module + ".weight", TensorDType.I8, [2, 3], [0x80, 0x00, 0x7F, 0x01, 0xFF, 0x05]),
            (Module + ".weight_scale", TensorDType.F16, [2, 1], Halves(0x3800, 0x3000)),
            (Module + ".input_scale", TensorDType.F16, [1], Halves(0x3C00)));
        Assert.Equal([-64f, 0f, 63.5f, 0.125f, -0.125f, 0.625f], ReadBack(dir.Sub("in"), dir.Sub("out"), Module + ".weight"));
        Assert.Equal([Module + ".weight"], CheckpointReader.ReadManifest(dir.Sub("out")).Tensors.Select(t => t.Name));
    }

    [Theory]
    [InlineData("float-quantized", "quantization_config.format")]
    [InlineData("missing scale", Module + ".weight_scale")]
    [InlineData("shape", Module + ".weight_packed")]
    [InlineData("bits", "num_bits")]
    public void WhatIsNotReadIsRefusedNamingTheFileAndTheFieldOrTensor(string broken, string named)
    {
        using var dir = new TempDir();
        var tensors = new List<(string, TensorDType, long[], byte[])>
        {
            (Module + ".weight_packed", TensorDType.I32, [1, 2], Words(0, 0)),
            (Module + ".weight_shape", TensorDType.I64, [2], Longs(1, broken == "shape" ? 17 : 16)),
        };
        if (broken != "missing scale") tensors.Add((Module + ".weight_scale", TensorDType.BF16, [1, 1], Halves(0x3F80)));
        WriteCheckpoint(dir.Sub("in"), Weights(broken == "bits" ? 3 : 4, true, 16), broken == "float-quantized" ? broken : "pack-quantized", [.. tensors]);
        var e = Assert.Throws<CheckpointFormatException>(() => DequantizedCheckpoint.Read(CheckpointReader.ReadManifest(dir.Sub("in"))));
        Assert.Contains(named, e.Message);
        Assert.Contains(dir.Sub("in"), e.Message);
    }
}
