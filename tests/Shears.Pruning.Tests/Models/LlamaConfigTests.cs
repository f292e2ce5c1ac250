using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Pruning.Tests.Checkpoints;

namespace Shears.Pruning.Tests.Models;

public class LlamaConfigTests
{
    private const string Minimal = """
        {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128}
        """;

    [Fact]
    public void ReadsTheDemoCheckpointsConfig()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(HiddenSize: 64, Layers: 2, Heads: 4, KvHeads: 2, IntermediateSize: 96, VocabSize: 128));

        var config = LlamaConfig.Load(dir.Path);

        Assert.Equal(new LlamaConfig(HiddenSize: 64, IntermediateSize: 96, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 16,
            NumHiddenLayers: 2, VocabSize: 128, RmsNormEps: 1e-5, RopeTheta: 10000, TieWordEmbeddings: false,
            MaxPositionEmbeddings: 512), config);
        Assert.Equal(2, config.KeyValueGroups);
    }

    [Fact]
    public void DefaultsAreTransformers()
    {
        var config = LlamaConfig.Parse(Minimal);

        Assert.Equal(4, config.NumKeyValueHeads);
        Assert.Equal(16, config.HeadDim);
        Assert.Equal(10000.0, config.RopeTheta);
        Assert.Equal(1e-6, config.RmsNormEps);
        Assert.False(config.TieWordEmbeddings);
        Assert.Equal(2048, config.MaxPositionEmbeddings);
        Assert.Null(config.RopeScaling);
    }

    [Fact]
    public void NullsCountAsAbsentAndExplicitValuesWin()
    {
        var config = LlamaConfig.Parse("""
            {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128,
             "num_key_value_heads": null, "head_dim": 24, "rope_theta": 500000.0, "tie_word_embeddings": true, "rope_scaling": null,
             "max_position_embeddings": 131072.0}
            """);

        Assert.Equal(4, config.NumKeyValueHeads);
        Assert.Equal(24, config.HeadDim);
        Assert.Equal(500000.0, config.RopeTheta);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal(131072, config.MaxPositionEmbeddings);
    }

    [Fact]
    public void ReadsLlama3RopeScaling()
    {
        var config = LlamaConfig.Parse(Minimal.Replace("}", """
            , "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
            """));

        Assert.Equal(new LlamaRopeScaling("llama3", 32, 1, 4, 8192), config.RopeScaling);
    }

    [Theory]
    // model_type and extra fields → the window and the first layer that uses it, as transformers' configs decide them.
    [InlineData(null, "", null, 0)]
    [InlineData("llama", ", \"sliding_window\": 8", null, 0)]
    [InlineData("mistral", "", 4096, 0)]
    [InlineData("mistral", ", \"sliding_window\": null", null, 0)]
    [InlineData("mistral", ", \"sliding_window\": 8", 8, 0)]
    [InlineData("qwen2", ", \"sliding_window\": 8, \"use_sliding_window\": false, \"max_window_layers\": 1", null, 0)]
    [InlineData("qwen2", ", \"sliding_window\": 8, \"use_sliding_window\": true, \"max_window_layers\": 1", 8, 1)]
    [InlineData("qwen3", ", \"sliding_window\": 8, \"use_sliding_window\": true, \"max_window_layers\": 28", null, 0)]
    [InlineData("qwen2", ", \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\"]", 8, 1)]
    [InlineData("qwen2", ", \"sliding_window\": 8, \"use_sliding_window\": true, \"layer_types\": [\"full_attention\", \"full_attention\"]", null, 0)]
    public void SlidingWindowsFollowTheModelType(string? modelType, string fields, int? window, int fromLayer)
    {
        var json = Minimal.Replace("}", (modelType is null ? "" : $", \"model_type\": \"{modelType}\"") + fields + "}");
        var config = LlamaConfig.Parse(json);

        Assert.Equal(modelType ?? "llama", config.ModelType);
        Assert.Equal(window, config.SlidingWindow);
        Assert.Equal(fromLayer, config.SlidingWindowFromLayer);
        Assert.Equal(fromLayer == 0 ? window : null, config.WindowOf(0));
        Assert.Equal(window, config.WindowOf(1));
        Assert.Equal(modelType == "qwen3", config.QueryKeyNorm);
    }

    [Theory]
    [InlineData("""{"intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128}""", "hidden_size", "missing")]
    [InlineData("""{"hidden_size": "64", "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128}""", "hidden_size", "string")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 0}""", "vocab_size", "positive")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96.5, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128}""", "intermediate_size", "96.5")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 3, "num_hidden_layers": 2, "vocab_size": 128}""", "num_key_value_heads", "divide")]
    [InlineData("""{"hidden_size": 60, "intermediate_size": 96, "num_attention_heads": 8, "num_hidden_layers": 2, "vocab_size": 128}""", "head_dim", "multiple")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "hidden_act": "gelu"}""", "hidden_act", "gelu")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "rope_scaling": {"rope_type": "yarn", "factor": 4}}""", "rope_scaling.rope_type", "yarn")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "tie_word_embeddings": 1}""", "tie_word_embeddings", "true or false")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "model_type": "granite"}""", "model_type", "granite")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "model_type": "qwen2", "layer_types": ["full_attention"]}""", "layer_types", "1 entries")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "layer_types": ["full_attention", "chunked_attention"]}""", "layer_types", "chunked_attention")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 3, "vocab_size": 128, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}""", "layer_types", "interleaves")]
    [InlineData("""{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128, "layer_types": ["full_attention", "sliding_attention"]}""", "sliding_window", "missing")]
    public void ErrorsNameTheFileAndTheField(string json, string field, string detail)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), json);

        var e = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Load(dir.Path));

        Assert.Equal(field, e.Field);
        Assert.Contains(Path.Combine(dir.Path, "config.json"), e.Message);
        Assert.Contains($"'{field}'", e.Message);
        Assert.Contains(detail, e.Message);
    }

    [Fact]
    public void AMissingOrBrokenFileIsNamed()
    {
        using var dir = new TempDir();
        var missing = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Load(dir.Path));
        Assert.Contains("config.json", missing.Message);
        Assert.Contains("does not exist", missing.Message);

        File.WriteAllText(dir.File("config.json"), "{ not json");
        var broken = Assert.Throws<LlamaConfigException>(() => LlamaConfig.Load(dir.Path));
        Assert.Contains("config.json", broken.Message);
        Assert.Contains("not valid JSON", broken.Message);
    }
}
