using System.Text.Json;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Tests.Checkpoints;

public class DemoCheckpointTests
{
    private static float[] Values(CheckpointManifest m, TensorEntry t)
    {
        var bytes = CheckpointReader.ReadTensor(m, t);
        var values = new float[t.ElementCount];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = t.DType switch
            {
                TensorDType.F32 => BitConverter.ToSingle(bytes, i * 4),
                TensorDType.F16 => FloatBits.HalfToSingle(BitConverter.ToUInt16(bytes, i * 2)),
                _ => FloatBits.BFloat16ToSingle(BitConverter.ToUInt16(bytes, i * 2)),
            };
        }
        return values;
    }

    [Fact]
    public void DefaultIsAShardedLlamaCheckpoint()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path);

        var m = CheckpointReader.ReadManifest(dir.Path);

        Assert.Equal("model.safetensors.index.json", m.IndexFileName);
        Assert.True(m.Files.Count >= 2);
        Assert.All(m.Files, f => Assert.Equal("pt", f.Metadata!["format"]));
        Assert.Equal(["config.json", "generation_config.json"], m.CompanionFiles);
        Assert.Equal(3 + 4 * 9, m.Tensors.Count);
        Assert.All(m.Tensors, t => Assert.Equal(TensorDType.BF16, t.DType));
        Assert.Equal([1024L, 256], m.Get("model.embed_tokens.weight").Shape);
        Assert.Equal([1024L, 256], m.Get("lm_head.weight").Shape);
        Assert.Equal([256L], m.Get("model.norm.weight").Shape);
        for (var i = 0; i < 4; i++)
        {
            var p = $"model.layers.{i}.";
            Assert.Equal([256L, 256], m.Get(p + "self_attn.q_proj.weight").Shape);
            Assert.Equal([128L, 256], m.Get(p + "self_attn.k_proj.weight").Shape);
            Assert.Equal([128L, 256], m.Get(p + "self_attn.v_proj.weight").Shape);
            Assert.Equal([256L, 256], m.Get(p + "self_attn.o_proj.weight").Shape);
            Assert.Equal([688L, 256], m.Get(p + "mlp.gate_proj.weight").Shape);
            Assert.Equal([688L, 256], m.Get(p + "mlp.up_proj.weight").Shape);
            Assert.Equal([256L, 688], m.Get(p + "mlp.down_proj.weight").Shape);
            Assert.Equal([256L], m.Get(p + "input_layernorm.weight").Shape);
            Assert.Equal([256L], m.Get(p + "post_attention_layernorm.weight").Shape);
        }

        var up = Values(m, m.Get("model.layers.0.mlp.up_proj.weight"));
        var std = Math.Sqrt(up.Average(v => (double)v * v));
        Assert.InRange(std, 0.018, 0.022);
        Assert.True(up.Count(v => v == 0f) >= up.Length / 1000 / 2, "a few exact zeros");
        Assert.True(up.Select(MathF.Abs).Distinct().Count() < up.Length / 10, "bf16 ties magnitudes");
        Assert.InRange(Values(m, m.Get("model.norm.weight")).Average(), 0.99f, 1.01f);

        using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.Path, "config.json")));
        var c = config.RootElement;
        Assert.Equal("LlamaForCausalLM", c.GetProperty("architectures")[0].GetString());
        Assert.Equal("llama", c.GetProperty("model_type").GetString());
        Assert.Equal(256, c.GetProperty("hidden_size").GetInt32());
        Assert.Equal(688, c.GetProperty("intermediate_size").GetInt32());
        Assert.Equal(8, c.GetProperty("num_attention_heads").GetInt32());
        Assert.Equal(4, c.GetProperty("num_key_value_heads").GetInt32());
        Assert.Equal(4, c.GetProperty("num_hidden_layers").GetInt32());
        Assert.Equal(1024, c.GetProperty("vocab_size").GetInt32());
        Assert.Equal(1e-5, c.GetProperty("rms_norm_eps").GetDouble());
        Assert.Equal(10000, c.GetProperty("rope_theta").GetDouble());
        Assert.Equal(512, c.GetProperty("max_position_embeddings").GetInt32());
        Assert.False(c.GetProperty("tie_word_embeddings").GetBoolean());
        Assert.Equal("bfloat16", c.GetProperty("torch_dtype").GetString());
        using var _ = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.Path, "generation_config.json")));
    }

    [Fact]
    public void SameSeedSameBytesOtherSeedOtherBytes()
    {
        using var dir = new TempDir();
        var options = new DemoCheckpointOptions(HiddenSize: 32, Layers: 1, Heads: 4, KvHeads: 2, IntermediateSize: 64, VocabSize: 64);
        DemoCheckpoint.Write(dir.Sub("a"), options);
        DemoCheckpoint.Write(dir.Sub("b"), options);
        DemoCheckpoint.Write(dir.Sub("c"), options with { Seed = 99 });

        byte[] Bytes(string sub) => File.ReadAllBytes(Path.Combine(dir.Path, sub, "model.safetensors"));
        Assert.Equal(Bytes("a"), Bytes("b"));
        Assert.NotEqual(Bytes("a"), Bytes("c"));
    }

    [Theory]
    [InlineData(TensorDType.F32, "float32")]
    [InlineData(TensorDType.F16, "float16")]
    public void OtherFloatTypes(TensorDType dtype, string torchDType)
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(HiddenSize: 32, Layers: 2, Heads: 4, KvHeads: 4, IntermediateSize: 48, VocabSize: 64, DType: dtype));

        var m = CheckpointReader.ReadManifest(dir.Path);

        Assert.Null(m.IndexFileName);
        Assert.All(m.Tensors, t => Assert.Equal(dtype, t.DType));
        Assert.Equal([32L, 32], m.Get("model.layers.1.self_attn.k_proj.weight").Shape);
        var q = Values(m, m.Get("model.layers.1.self_attn.q_proj.weight"));
        Assert.Contains(0f, q);
        Assert.InRange(q.Max(MathF.Abs), 0.03f, 0.2f);
        using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.Path, "config.json")));
        Assert.Equal(torchDType, config.RootElement.GetProperty("torch_dtype").GetString());
    }

    [Fact]
    public void InconsistentSizesAreRefused()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(HiddenSize: 100, Heads: 8)));
        Assert.Throws<ArgumentException>(() => DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(Heads: 8, KvHeads: 3)));
        Assert.Throws<ArgumentException>(() => DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(DType: TensorDType.I8)));
    }
}
