using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Shears.Pruning.Checkpoints;
using Shears.Pruning.Models;
using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using Shears.Pruning.Tests.Onnx;
using Shears.Testing;
using Xunit.Abstractions;

namespace Shears.Pruning.Tests.Fuzz;

/// <summary>
/// Thousands of mutants of valid files through each reader a run feeds with a user's file: the safetensors header and
/// index, the ONNX protobuf, tokenizer.json and tokenizer.model. Each is accepted (and then fully read or used), or
/// refused with Shears' own error naming the file — never another exception, a hang, or an allocation a forged
/// length asked for.
/// </summary>
public class MutatedFileTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    [Fact]
    public void SafetensorsHeaders()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Sub("valid"), new DemoCheckpointOptions(HiddenSize: 16, Layers: 1, Heads: 2, KvHeads: 1, IntermediateSize: 24, VocabSize: 32));
        byte[] file = File.ReadAllBytes(Path.Combine(dir.Sub("valid"), "model.safetensors"));
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(file);
        byte[] header = file[..(int)(8 + headerLength)], data = file[(int)(8 + headerLength)..];
        string path = Path.Combine(dir.Sub("fuzz"), "model.safetensors");
        // The header (its length and its JSON) mutated with the tensors' bytes kept after it; then the whole file.
        var (accepted, refused) = Mutations.Run(seed => [.. Mutations.Mutate(header, seed, text: true), .. data], path, 2000, ReadEveryTensor, [typeof(CheckpointFormatException)], Limit);
        var whole = Mutations.Run(seed => Mutations.Mutate(file, seed, text: false), path, 1000, ReadEveryTensor, [typeof(CheckpointFormatException)], Limit);
        output.WriteLine($"header mutants: {accepted} accepted, {refused} refused; whole-file mutants: {whole.Accepted} accepted, {whole.Refused} refused");
        Assert.True(refused > 1000, $"only {refused} of 2000 header mutants were refused: the mutations do not reach the parser");
    }

    private static void ReadEveryTensor(string path)
    {
        var manifest = CheckpointReader.ReadManifest(path);
        foreach (var tensor in manifest.Tensors) CheckpointReader.ReadTensor(manifest, tensor);
    }

    [Fact]
    public void SafetensorsIndexes()
    {
        using var dir = new TempDir();
        DemoCheckpoint.Write(dir.Path, new DemoCheckpointOptions(HiddenSize: 16, Layers: 1, Heads: 2, KvHeads: 1, IntermediateSize: 24, VocabSize: 32));
        var names = CheckpointReader.ReadManifest(Path.Combine(dir.Path, "model.safetensors")).Tensors.Select(t => t.Name).ToArray();
        File.Move(Path.Combine(dir.Path, "model.safetensors"), Path.Combine(dir.Path, "model-00001-of-00001.safetensors"));
        string index = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {"
            + string.Join(", ", names.Select(n => $"\"{n}\": \"model-00001-of-00001.safetensors\"")) + "}}";
        string path = Path.Combine(dir.Path, "model.safetensors.index.json");
        File.WriteAllText(path, index);
        ReadEveryTensor(path);
        var (accepted, refused) = Mutations.Run(seed => Mutations.Mutate(Encoding.UTF8.GetBytes(index), seed, text: true), path, 1500, ReadEveryTensor, [typeof(CheckpointFormatException)], Limit);
        output.WriteLine($"index mutants: {accepted} accepted, {refused} refused");
        Assert.True(refused > 300, $"only {refused} index mutants were refused");
    }

    [Fact]
    public void OnnxModels()
    {
        using var dir = new TempDir();
        const int K = 8, N = 4;
        float[] w = Enumerable.Range(0, K * N).Select(i => i * 0.25f - 3).ToArray(), b = Enumerable.Range(0, N).Select(i => (float)i).ToArray();
        byte[] valid = new ProtoWriter().Varint(1, 8L).String(2, "fuzz").Message(8, o => o.String(1, "").Varint(2, 17L)).Message(7, g =>
        {
            g.Message(1, OnnxBytes.Node("MatMul", "encoder.layer.0.attention.self.query", ["x", "w"], ["xw"]));
            g.Message(1, OnnxBytes.Node("Add", "bias", ["xw", "b"], ["y"]));
            g.String(2, "tiny");
            g.Message(5, OnnxBytes.RawTensor("w", OnnxBytes.FLOAT, [K, N], MemoryMarshal.AsBytes(w.AsSpan()).ToArray()));
            g.Message(5, OnnxBytes.RawTensor("b", OnnxBytes.FLOAT, [N], MemoryMarshal.AsBytes(b.AsSpan()).ToArray()));
        }).ToArray();
        string path = Path.Combine(dir.Path, "model.onnx");
        static void Read(string path)
        {
            var model = OnnxModel.Read(path);
            foreach (var initializer in model.Initializers.Where(i => i.RawDataLength is not null)) model.ReadRawData(initializer.Name);
            model.FindPrunable(includeOutsideLayers: true);
        }
        File.WriteAllBytes(path, valid);
        Read(path);
        var (accepted, refused) = Mutations.Run(seed => Mutations.Mutate(valid, seed, text: false), path, 3000, Read, [typeof(CheckpointFormatException)], Limit);
        output.WriteLine($"ONNX mutants: {accepted} accepted, {refused} refused");
        Assert.True(refused > 500, $"only {refused} ONNX mutants were refused");
    }

    [Fact]
    public void TokenizerJson()
    {
        using var dir = new TempDir();
        TinyTokenizer.Write(dir.Path);
        string path = Path.Combine(dir.Path, CheckpointTokenizer.JsonFileName);
        byte[] valid = File.ReadAllBytes(path);
        static void Use(string path) => CheckpointTokenizer.Load(Path.GetDirectoryName(path)!).Encode("The then <|sep|> the, thé 42!");
        var (accepted, refused) = Mutations.Run(seed => Mutations.Mutate(valid, seed, text: true), path, 1500, Use, [typeof(InvalidDataException), typeof(NotSupportedException)], Limit);
        output.WriteLine($"tokenizer.json mutants: {accepted} accepted, {refused} refused");
        Assert.True(refused > 300, $"only {refused} tokenizer.json mutants were refused");
    }

    [Fact]
    public void SentencePieceModels()
    {
        using var dir = new TempDir();
        byte[] valid = File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Models", "TokenizerReference", "sentencepiece", "tokenizer.model"));
        string path = Path.Combine(dir.Path, "tokenizer.model");
        static void Use(string path) => SentencePieceBpe.Load(path).Encode("The then the, thé 42!");
        var (accepted, refused) = Mutations.Run(seed => Mutations.Mutate(valid, seed, text: false), path, 1500, Use, [typeof(InvalidDataException), typeof(NotSupportedException)], Limit);
        output.WriteLine($"tokenizer.model mutants: {accepted} accepted, {refused} refused");
        Assert.True(refused > 300, $"only {refused} tokenizer.model mutants were refused");
    }
}
