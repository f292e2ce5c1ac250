using Shears.Pruning.Checkpoints;
using Shears.Pruning.Encoders;
using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Onnx;

/// <summary>Encoder weights read from ONNX initializers of every float type an export uses, widened exactly.</summary>
public class BertWeightReadTests
{
    [Fact]
    public void Fp32Fp16AndBf16InitializersAreReadAsTheirValues()
    {
        using var dir = new TempDir();
        float[] values = [1.5f, -0.25f, 3.0f, -0f, 65504f, 1e-3f];
        byte[] fp32 = values.SelectMany(BitConverter.GetBytes).ToArray();
        byte[] fp16 = values.SelectMany(v => BitConverter.GetBytes(FloatBits.SingleToHalf(v))).ToArray();
        byte[] bf16 = values.SelectMany(v => BitConverter.GetBytes(FloatBits.SingleToBFloat16(v))).ToArray();
        byte[] ids = new long[] { 1, 2 }.SelectMany(BitConverter.GetBytes).ToArray();
        string path = Path.Combine(dir.Path, "model.onnx");
        File.WriteAllBytes(path, OnnxBytes.Model(OnnxBytes.Graph(
            [OnnxBytes.RawTensor("w32", OnnxBytes.FLOAT, [2, 3], fp32), OnnxBytes.RawTensor("w16", OnnxBytes.FLOAT16, [2, 3], fp16),
             OnnxBytes.RawTensor("wbf", OnnxBytes.BFLOAT16, [3, 2], bf16), OnnxBytes.RawTensor("ids", OnnxBytes.INT64, [2], ids)], [])));
        var model = OnnxModel.Read(path);

        var tensors = BertWeightNames.Read(model, ["w32", "w16", "wbf"], CPU);
        try
        {
            Assert.Equal(values, tensors["w32"].data<float>().ToArray());
            Assert.Equal(values.Select(v => FloatBits.HalfToSingle(FloatBits.SingleToHalf(v))), tensors["w16"].data<float>().ToArray());
            Assert.Equal(values.Select(v => FloatBits.BFloat16ToSingle(FloatBits.SingleToBFloat16(v))), tensors["wbf"].data<float>().ToArray());
            Assert.Equal(new long[] { 3, 2 }, tensors["wbf"].shape);
            Assert.All(tensors.Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }

        var e = Assert.Throws<CheckpointFormatException>(() => BertWeightNames.Read(model, ["w32", "ids"], CPU));
        Assert.Contains(path, e.Message);
        Assert.Contains("ids", e.Message);
    }
}
