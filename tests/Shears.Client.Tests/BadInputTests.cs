using Shears.Testing;
using System.Text;
using Shears.Pruning.Checkpoints;

namespace Shears.Client.Tests;

/// <summary>Each bad input is refused with a message naming the file, tensor or option, a non-zero exit, and nothing in --out.</summary>
public class BadInputTests
{
    private static async Task AssertRefused(TempDir dir, string expectedInMessage, params string[] args)
    {
        var result = await ShearsProcess.RunAsync(args);
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.Contains(expectedInMessage, result.Stderr);
        string outDir = dir.Sub("out");
        Assert.True(!Directory.Exists(outDir) || !Directory.EnumerateFileSystemEntries(outDir).Any(), "--out was written");
        Assert.Empty(Directory.GetDirectories(dir.Path, ".*shears-tmp*"));
    }

    private static string[] Run(TempDir dir, params string[] extra) =>
        ["run", "--model", dir.Sub("in"), "--out", dir.Sub("out"), .. extra];

    /// <summary>Writes a single-file checkpoint from a hand-written header and data region.</summary>
    private static void WriteRaw(string dir, string header, int dataBytes, long? declaredHeaderLength = null)
    {
        Directory.CreateDirectory(dir);
        var json = Encoding.UTF8.GetBytes(header);
        using var file = File.Create(Path.Combine(dir, "model.safetensors"));
        file.Write(BitConverter.GetBytes(declaredHeaderLength ?? json.Length));
        file.Write(json);
        file.Write(new byte[dataBytes]);
    }

    private const string Good = """{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"model.layers.0.mlp.down_proj.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}}""";

    [Fact]
    public async Task MissingModel()
    {
        using var dir = new TempDir();
        await AssertRefused(dir, "--model", "run", "--out", dir.Sub("out"), "--sparsity", "0.5");
        await AssertRefused(dir, dir.Sub("in"), Run(dir, "--sparsity", "0.5"));
    }

    [Theory]
    [InlineData("1.5")]
    [InlineData("-0.1")]
    [InlineData("half")]
    public async Task SparsityOutsideTheUnitInterval(string sparsity)
    {
        using var dir = new TempDir();
        WriteRaw(dir.Sub("in"), Good, 32);
        await AssertRefused(dir, "--sparsity", Run(dir, "--sparsity", sparsity));
    }

    [Fact]
    public async Task RemoveWithGptqQuantization()
    {
        using var dir = new TempDir();
        WriteRaw(dir.Sub("in"), Good, 32);
        string calibration = Path.Combine(dir.Path, "calibration.json");
        File.WriteAllText(calibration, "[[1, 2, 3, 4]]");
        var args = Run(dir, "--sparsity", "0.25", "--pattern", "neurons", "--scope", "layer", "--remove", "--quantize", "W4A16", "--quant-method", "gptq", "--calibration", calibration);
        await AssertRefused(dir, "--remove with --quant-method gptq", args);
        Assert.Equal(2, (await ShearsProcess.RunAsync(args)).ExitCode);
    }

    [Fact]
    public async Task NonEmptyOutWithoutForce()
    {
        using var dir = new TempDir();
        WriteRaw(dir.Sub("in"), Good, 32);
        Directory.CreateDirectory(dir.Sub("out"));
        File.WriteAllText(Path.Combine(dir.Sub("out"), "keep.txt"), "mine");
        var result = await ShearsProcess.RunAsync(Run(dir, "--sparsity", "0.5"));
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--out", result.Stderr);
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(dir.Sub("out")).Select(Path.GetFileName));

        var forced = await ShearsProcess.RunAsync(Run(dir, "--sparsity", "0.5", "--force"));
        Assert.True(forced.ExitCode == 0, forced.ToString());
        Assert.False(File.Exists(Path.Combine(dir.Sub("out"), "keep.txt")));
    }

    [Theory]
    [InlineData("truncated")]
    [InlineData("header-past-end")]
    [InlineData("malformed-json")]
    [InlineData("overlapping")]
    [InlineData("out-of-range")]
    [InlineData("size-mismatch")]
    [InlineData("duplicate")]
    public async Task BrokenSafetensors(string kind)
    {
        using var dir = new TempDir();
        string input = dir.Sub("in");
        switch (kind)
        {
            case "truncated":
                Directory.CreateDirectory(input);
                File.WriteAllBytes(Path.Combine(input, "model.safetensors"), [1, 2, 3]);
                break;
            case "header-past-end": WriteRaw(input, Good, 32, declaredHeaderLength: 1 << 20); break;
            case "malformed-json": WriteRaw(input, """{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32",""", 32); break;
            case "overlapping": WriteRaw(input, Good.Replace("[16,32]", "[8,24]"), 32); break;
            case "out-of-range": WriteRaw(input, Good.Replace("[16,32]", "[16,48]"), 32); break;
            case "size-mismatch": WriteRaw(input, Good.Replace("\"shape\":[2,2],\"data_offsets\":[0,16]", "\"shape\":[2,3],\"data_offsets\":[0,16]"), 32); break;
            case "duplicate": WriteRaw(input, Good.Replace("down_proj", "up_proj"), 32); break;
        }
        await AssertRefused(dir, "model.safetensors", Run(dir, "--sparsity", "0.5"));
    }

    [Fact]
    public async Task IndexNamingAMissingShard()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"));
        var shard = Directory.GetFiles(dir.Sub("in"), "model-*.safetensors").Order().Last();
        File.Delete(shard);
        await AssertRefused(dir, Path.GetFileName(shard), Run(dir, "--sparsity", "0.5"));
    }

    [Fact]
    public async Task NaNInAPrunableTensor()
    {
        using var dir = new TempDir();
        TieHeavyCheckpoint.Write(dir.Sub("in"), TensorDType.F32);
        var manifest = CheckpointReader.ReadManifest(dir.Sub("in"));
        var victim = manifest.Get("model.layers.1.mlp.down_proj.weight");
        using (var file = File.OpenWrite(Path.Combine(dir.Sub("in"), victim.FileName)))
        {
            file.Position = victim.FileOffset + 4 * 5;
            file.Write(BitConverter.GetBytes(float.NaN));
        }
        await AssertRefused(dir, "model.layers.1.mlp.down_proj.weight", Run(dir, "--sparsity", "0.5"));
    }

    [Fact]
    public async Task UnknownOptionValues()
    {
        using var dir = new TempDir();
        WriteRaw(dir.Sub("in"), Good, 32);
        await AssertRefused(dir, "--scope", Run(dir, "--sparsity", "0.5", "--scope", "everything"));
        await AssertRefused(dir, "--include", Run(dir, "--sparsity", "0.5", "--include", "no.such.*"));
        await AssertRefused(dir, "--method wanda", Run(dir, "--sparsity", "0.5", "--method", "wanda"));
    }

    [Fact]
    public async Task EvaluationDataTheModelCannotRead()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("in"), new DemoCheckpointOptions(HiddenSize: 16, Layers: 1, Heads: 2, KvHeads: 1, IntermediateSize: 24, VocabSize: 64));
        string ids = Path.Combine(dir.Path, "eval.json");
        File.WriteAllText(ids, "[[1, 2, 3], [4, 64, 5]]");
        await AssertRefused(dir, $"'{ids}', sequence 1, position 1: token id 64 is outside the model's vocabulary of 64", Run(dir, "--sparsity", "0.5", "--eval", ids));

        // Text needs the checkpoint's tokenizer; this one has none.
        string text = Path.Combine(dir.Path, "eval.txt");
        File.WriteAllText(text, "Call me Ishmael.");
        await AssertRefused(dir, "tokenizer.json", Run(dir, "--sparsity", "0.5", "--eval", text));

        // A tokenizer whose ids the model does not have.
        TinyTokenizer.Write(dir.Sub("in"));
        await AssertRefused(dir, "outside the model's vocabulary of 64", Run(dir, "--sparsity", "0.5", "--eval", text));
    }

    [Theory]
    [InlineData("--scope owl needs --calibration", "--scope", "owl")]
    [InlineData("--scope owl works with --method magnitude, wanda or sparsegpt", "--scope", "owl", "--method", "random", "--calibration", "CALIBRATION")]
    [InlineData("--scope owl gives each layer its own sparsity: use --pattern unstructured", "--scope", "owl", "--pattern", "rows", "--calibration", "CALIBRATION")]
    [InlineData("--owl-threshold must be a positive number, got 0", "--scope", "owl", "--owl-threshold", "0", "--calibration", "CALIBRATION")]
    [InlineData("--owl-lambda must lie in [0, 0.5], got 0.7", "--scope", "owl", "--owl-lambda", "0.7", "--calibration", "CALIBRATION")]
    [InlineData("--owl-lambda needs --scope owl", "--scope", "layer", "--owl-lambda", "0.1")]
    [InlineData("--method wanda prunes each weight matrix on its own (as the paper does): use --scope layer or owl", "--scope", "global", "--method", "wanda", "--calibration", "CALIBRATION")]
    [InlineData("--epochs and --finetune-steps both set each round's steps: give one of them", "--epochs", "2", "--finetune-steps", "3", "--finetune-data", "CALIBRATION")]
    [InlineData("--lr-schedule must be one of constant, cosine, got 'linear'", "--epochs", "1", "--finetune-data", "CALIBRATION", "--lr-schedule", "linear")]
    [InlineData("--warmup-steps needs --finetune-steps or --epochs", "--warmup-steps", "5")]
    [InlineData("--distill hidden needs --finetune-steps or --epochs", "--distill", "hidden")]
    [InlineData("--hidden-weight weighs the term of --distill hidden: use it with --distill hidden", "--epochs", "1", "--finetune-data", "CALIBRATION", "--hidden-weight", "3")]
    [InlineData("--hidden-weight must be a positive number, got 0", "--epochs", "1", "--finetune-data", "CALIBRATION", "--distill", "hidden", "--hidden-weight", "0")]
    [InlineData("--distill must be one of output, hidden, got 'layers'", "--epochs", "1", "--finetune-data", "CALIBRATION", "--distill", "layers")]
    public async Task OwlAndTrainingOptionsOutOfPlace(string message, params string[] options)
    {
        using var dir = new TempDir();
        WriteRaw(dir.Sub("in"), Good, 32);
        string calibration = Path.Combine(dir.Path, "calibration.json");
        File.WriteAllText(calibration, "[[1, 2, 3]]");
        await AssertRefused(dir, message, Run(dir, ["--sparsity", "0.5", .. options.Select(o => o == "CALIBRATION" ? calibration : o)]));
    }
}
