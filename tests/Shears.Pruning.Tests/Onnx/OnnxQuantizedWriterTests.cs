using Shears.Pruning.Tests.Checkpoints;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;
using Shears.Pruning.Quantization;

namespace Shears.Pruning.Tests.Onnx;

public class OnnxQuantizedWriterTests(MiniLmFixture miniLm) : IClassFixture<MiniLmFixture>
{
    private const int K = 48, N = 8; // K not a multiple of the 32-block: the last block is padded

    /// <summary>y = x · W + b with x [2, 3, K]: a MatMul on a constant weight, and an Add that must stay as it is.</summary>
    private static byte[] TinyModel(float[] w, float[] bias) => new ProtoWriter()
        .Varint(1, 8L).String(2, "shears-tests").Message(8, o => o.String(1, "").Varint(2, 17L))
        .Message(7, g =>
        {
            g.Message(1, OnnxBytes.Node("MatMul", "proj", ["x", "w"], ["xw"]));
            g.Message(1, OnnxBytes.Node("Add", "bias", ["xw", "b"], ["y"]));
            g.String(2, "tiny");
            g.Message(5, OnnxBytes.RawTensor("w", OnnxBytes.FLOAT, [K, N], MemoryMarshal.AsBytes(w.AsSpan()).ToArray()));
            g.Message(5, OnnxBytes.RawTensor("b", OnnxBytes.FLOAT, [N], MemoryMarshal.AsBytes(bias.AsSpan()).ToArray()));
            g.Message(11, ValueInfo("x", 2, 3, K));
            g.Message(12, ValueInfo("y", 2, 3, N));
        }).ToArray();

    private static Action<ProtoWriter> ValueInfo(string name, params long[] dims) => v => v.String(1, name)
        .Message(2, t => t.Message(1, tt => tt.Varint(1, (long)OnnxBytes.FLOAT).Message(2, s => { foreach (long d in dims) s.Message(1, dim => dim.Varint(1, d)); })));

    private static float[] Run(string model, float[] x)
    {
        using var session = new InferenceSession(model);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(x, [2, 3, K]))]);
        return results.First().AsEnumerable<float>().ToArray();
    }

    private static (float[] W, float[] Bias, float[] X) Data(int seed)
    {
        var random = new Random(seed);
        var w = Enumerable.Range(0, K * N).Select(i => i % 5 == 0 ? 0f : (float)(random.NextDouble() - 0.5)).ToArray();
        w[7] = 0.25f; w[15] = 0.25f; w[23] = -0.25f; // ties
        var bias = Enumerable.Range(0, N).Select(i => i * 0.1f).ToArray();
        var x = Enumerable.Range(0, 2 * 3 * K).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        return (w, bias, x);
    }

    private static float Dequantized(float[] w, QuantScheme scheme, int r, int c, (sbyte[] Q, QuantParams[] P) q)
    {
        int groups = (int)scheme.GroupsPerRow(K);
        var p = q.P[c * groups + (scheme.PerChannel ? 0 : r / scheme.GroupSize)];
        return GroupQuantizer.Dequantize(q.Q[c * K + r], p, Shears.Pruning.Checkpoints.TensorDType.F32);
    }

    [Fact]
    public void MatMulNBitsRunsInOnnxRuntimeAndComputesWithTheDequantizedWeights()
    {
        using var dir = new TempDir();
        var (w, bias, x) = Data(1);
        string input = Path.Combine(dir.Path, "in.onnx"), output = Path.Combine(dir.Path, "out.onnx");
        File.WriteAllBytes(input, TinyModel(w, bias));
        var scheme = QuantScheme.Parse("W4A16", 32);
        var sizes = OnnxQuantizedWriter.Write(input, output, ["w"], scheme);
        var q = OnnxQuantizedWriter.QuantizeColumns(w, K, N, scheme);
        var y = Run(output, x);
        for (int row = 0; row < 6; row++)
            for (int c = 0; c < N; c++)
            {
                double expected = bias[c];
                for (int r = 0; r < K; r++) expected += x[row * K + r] * Dequantized(w, scheme, r, c, q);
                Assert.True(Math.Abs(y[row * N + c] - expected) < 1e-4, $"y[{row}, {c}] = {y[row * N + c]}, expected {expected}");
            }
        for (int r = 0; r < K; r++)
            for (int c = 0; c < N; c++)
                if (w[r * N + c] == 0) Assert.Equal(0f, Dequantized(w, scheme, r, c, q));
        // Packed: N × 2 blocks × 16 bytes, scales N × 2 floats.
        Assert.Equal(N * 2 * 16 + N * 2 * 4, Assert.Single(sizes).QuantizedBytes);
        var model = OnnxModel.Read(output);
        Assert.Contains(model.Nodes, n => n.OpType == "MatMulNBits" && n.Domain == "com.microsoft" && n.IntAttribute("block_size", 0) == 32 && n.IntAttribute("K", 0) == K);
        Assert.Contains(model.Nodes, n => n.OpType == "Add" && n.Name == "bias");
        Assert.Null(model.FindInitializer("w"));
        Assert.Equal(1, model.Opsets["com.microsoft"]);
    }

    [Fact]
    public void NibblesArePackedAlongKLowFirstAsTheOperatorDefines()
    {
        // One output column, K = 32 (one block of 32): absmax 7.5 makes the scale exactly 1.
        var w = new float[32];
        (w[0], w[1], w[2], w[3]) = (7.5f, -7.5f, 2.5f, 3.5f);
        var scheme = QuantScheme.Parse("W4A16", 32);
        var (q, p) = OnnxQuantizedWriter.QuantizeColumns(w, 32, 1, scheme);
        Assert.Equal(1f, p[0].Scale);
        // Round half to even, then clamp: 7.5 → 8 → 7; −7.5 → −8; 2.5 → 2; 3.5 → 4; zeros stay 0.
        Assert.Equal(new sbyte[] { 7, -8, 2, 4, 0 }, q.Take(5).ToArray());
        using var dir = new TempDir();
        // Stored as q + 8, k = 0 in the low nibble: byte 0 = (k1: 0) << 4 | (k0: 15), byte 1 = (k3: 12) << 4 | (k2: 10), zeros 8.
        string input = Path.Combine(dir.Path, "in.onnx"), output = Path.Combine(dir.Path, "out.onnx");
        File.WriteAllBytes(input, new ProtoWriter().Varint(1, 8L).Message(8, o => o.String(1, "").Varint(2, 17L)).Message(7, g =>
        {
            g.Message(1, OnnxBytes.Node("MatMul", "m", ["x", "w"], ["y"]));
            g.Message(5, OnnxBytes.RawTensor("w", OnnxBytes.FLOAT, [32, 1], MemoryMarshal.AsBytes(w.AsSpan()).ToArray()));
        }).ToArray());
        OnnxQuantizedWriter.Write(input, output, ["w"], scheme);
        var model = OnnxModel.Read(output);
        var packed = model.ReadRawData("w_quantized");
        Assert.Equal(16, packed.Length);
        Assert.Equal(0x0F, packed[0]);
        Assert.Equal(0xCA, packed[1]);
        Assert.All(packed.Skip(2), b => Assert.Equal(0x88, b));
        Assert.Equal(1f, BitConverter.ToSingle(model.ReadRawData("w_scale")));
    }

    [Fact]
    public void DynamicInt8RunsInOnnxRuntimeAsQuantizeDynamicComputes()
    {
        using var dir = new TempDir();
        var (w, bias, x) = Data(2);
        string input = Path.Combine(dir.Path, "in.onnx"), output = Path.Combine(dir.Path, "out.onnx");
        File.WriteAllBytes(input, TinyModel(w, bias));
        var scheme = QuantScheme.Parse("W8A8");
        OnnxQuantizedWriter.Write(input, output, ["w"], scheme);
        var q = OnnxQuantizedWriter.QuantizeColumns(w, K, N, scheme);
        var y = Run(output, x);
        // DynamicQuantizeLinear: the range widened to 0, scale = range / 255, zp = round(−min / scale) in [0, 255].
        float min = Math.Min(0, x.Min()), max = Math.Max(0, x.Max());
        float scale = (max - min) / 255f;
        int zp = (int)Math.Clamp(MathF.Round(-min / scale, MidpointRounding.ToEven), 0, 255);
        var xq = x.Select(v => (int)Math.Clamp(MathF.Round(v / scale, MidpointRounding.ToEven) + zp, 0, 255)).ToArray();
        for (int row = 0; row < 6; row++)
            for (int c = 0; c < N; c++)
            {
                long acc = 0;
                for (int r = 0; r < K; r++) acc += (long)(xq[row * K + r] - zp) * q.Values[c * K + r];
                double expected = acc * (double)(scale * q.Groups[c].Scale) + bias[c];
                Assert.True(Math.Abs(y[row * N + c] - expected) < 1e-4, $"y[{row}, {c}] = {y[row * N + c]}, expected {expected}");
            }
        var model = OnnxModel.Read(output);
        Assert.Equal(["DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Mul", "Add"], model.Nodes.Select(n => n.OpType).ToArray());
        // The int8 values are stored as uint8 q + 128 over a zero point of 128 in row-major [K, N]: the same integers.
        var stored = model.ReadRawData("w_quantized");
        for (int r = 0; r < K; r++)
            for (int c = 0; c < N; c++) Assert.Equal(q.Values[c * K + r] + 128, stored[r * N + c]);
        Assert.All(model.ReadRawData("w_zero_point"), b => Assert.Equal(128, b));
        Assert.All(model.Initializers.Where(i => i.Name is "w_quantized" or "w_zero_point"), i => Assert.Equal(OnnxElementType.UInt8, i.ElementType));
    }

    [Fact]
    public void DynamicInt8WeightsAreUInt8OverZeroPoint128ByteForByte()
    {
        // W = [[127.5, −31.875], [−0.5, 0], [63.5, 2.625]] (K = 3, N = 2); scale = max |w| / 127.5: column 0's scale 1 gives
        // 127.5 → 128 (half to even) → clamped 127, −0.5 → 0, 63.5 → 64; column 1's scale 0.25 gives −127.5 → −128, 0, 10.5 → 10.
        // Stored row-major [K, N] as q + 128: 255, 0 / 128, 128 / 192, 138.
        using var dir = new TempDir();
        float[] w = [127.5f, -31.875f, -0.5f, 0f, 63.5f, 2.625f];
        string input = Path.Combine(dir.Path, "in.onnx"), output = Path.Combine(dir.Path, "out.onnx");
        File.WriteAllBytes(input, new ProtoWriter().Varint(1, 8L).Message(8, o => o.String(1, "").Varint(2, 17L)).Message(7, g =>
        {
            g.Message(1, OnnxBytes.Node("MatMul", "m", ["x", "w"], ["y"]));
            g.Message(5, OnnxBytes.RawTensor("w", OnnxBytes.FLOAT, [3, 2], MemoryMarshal.AsBytes(w.AsSpan()).ToArray()));
        }).ToArray());
        OnnxQuantizedWriter.Write(input, output, ["w"], QuantScheme.Parse("W8A8"));
        var model = OnnxModel.Read(output);
        Assert.Equal(new byte[] { 255, 0, 128, 128, 192, 138 }, model.ReadRawData("w_quantized"));
        Assert.Equal(new byte[] { 128, 128 }, model.ReadRawData("w_zero_point"));
    }

    [Fact]
    public void MiniLmQuantizedRunsInOnnxRuntimeWithSmallMatricesAndCloseEmbeddings()
    {
        using var dir = new TempDir();
        var weights = miniLm.Model.FindPrunable().Where(p => p.OpType == "MatMul").Select(p => p.Initializer).ToArray();
        Assert.Equal(36, weights.Length);
        var tokenizer = BertTextTokenizer.Create(miniLm.Files.VocabularyPath);
        string[] sentences = ["The ship sailed at dawn.", "Rain fell on the quiet town all night.", "She counted the coins twice."];
        float[][] dense;
        using (var session = new OnnxBertSession(miniLm.Files.ModelPath, 1)) dense = session.Embed(sentences, tokenizer);
        foreach (var (name, limit, minCosine) in new[] { ("W8A8", 0.26, 0.97), ("W4A16", 0.14, 0.9) })
        {
            string output = Path.Combine(dir.Path, name + ".onnx");
            var sizes = OnnxQuantizedWriter.Write(miniLm.Files.ModelPath, output, weights.Select(w => w.Name).ToArray(), QuantScheme.Parse(name, 128));
            double ratio = (double)sizes.Sum(s => s.QuantizedBytes) / sizes.Sum(s => s.FloatBytes);
            Assert.True(ratio <= limit, $"{name}: quantized matrices take {ratio:F3} of their fp32 bytes");
            using var session = new OnnxBertSession(output, 1);
            var embedded = session.Embed(sentences, tokenizer);
            for (int i = 0; i < sentences.Length; i++)
            {
                double cosine = dense[i].Zip(embedded[i], (a, b) => (double)a * b).Sum()
                                / Math.Sqrt(dense[i].Sum(a => (double)a * a) * embedded[i].Sum(b => (double)b * b));
                Assert.True(cosine > minCosine, $"{name}: sentence {i} cosine {cosine:F4}");
            }
        }
    }
}
