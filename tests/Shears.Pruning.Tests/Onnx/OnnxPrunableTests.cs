using Shears.Pruning.Onnx;
using Shears.Pruning.Tests.Checkpoints;
using static Shears.Pruning.Tests.Onnx.OnnxBytes;

namespace Shears.Pruning.Tests.Onnx;

public class OnnxPrunableTests
{
    /// <summary>
    /// Each way an exporter names things, and each reason a MatMul/Gemm weight is not prunable.
    /// </summary>
    private static OnnxModel Graph1(TempDir dir)
    {
        var bytes = Model(Graph(
            [
                RawTensor("927", FLOAT, [6, 8], new byte[6 * 8 * 4]),                          // numeric: named by its bias
                RawTensor("encoder.layer.2.attention.self.query.bias", FLOAT, [8], new byte[32]),
                RawTensor("onnx::MatMul_12", FLOAT16, [8, 16], new byte[8 * 16 * 2]),          // named by the node's path
                RawTensor("model.layers.0.mlp.up_proj.weight", BFLOAT16, [16, 8], new byte[16 * 8 * 2]), // Gemm transB=1
                RawTensor("model.layers.1.mlp.down_proj.weight", FLOAT, [8, 16], new byte[8 * 16 * 4]),  // Gemm transB=0
                RawTensor("pooler.dense.weight", FLOAT, [8, 8], new byte[8 * 8 * 4]),          // outside the blocks
                RawTensor("ints", INT64, [8, 8], new byte[8 * 8 * 8]),
                RawTensor("cube", FLOAT, [2, 2, 2], new byte[32]),
                RawTensor("left", FLOAT, [4, 6], new byte[4 * 6 * 4]),                         // input A, not B
                t => t.PackedVarints(1, [8, 8]).Varint(2, (long)FLOAT).String(8, "typed").Bytes(4, new byte[256]),
            ],
            [
                Node("MatMul", "MatMul_34", ["x", "927"], ["148"]),
                Node("Add", "Add_35", ["encoder.layer.2.attention.self.query.bias", "148"], ["149"]),
                Node("MatMul", "/encoder/layer.1/intermediate/dense/MatMul", ["149", "onnx::MatMul_12"], ["150"]),
                Node("Gemm", "up", ["150", "model.layers.0.mlp.up_proj.weight"], ["151"], ("transB", 1)),
                Node("Gemm", "down", ["151", "model.layers.1.mlp.down_proj.weight"], ["152"]),
                Node("Gemm", "Gemm_648", ["152", "pooler.dense.weight"], ["153"], ("transB", 1)),
                Node("MatMul", "mi", ["153", "ints"], ["154"]),
                Node("MatMul", "mc", ["153", "cube"], ["155"]),
                Node("MatMul", "ml", ["left", "x"], ["156"]),
                Node("MatMul", "mt", ["153", "typed"], ["157"]),
                Node("MatMul", "again", ["x", "927"], ["158"]),                                  // a second use: listed once
            ]));
        var path = dir.File("g.onnx");
        File.WriteAllBytes(path, bytes);
        return OnnxModel.Read(path);
    }

    [Fact]
    public void FindsMatMulAndGemmWeightsAndNamesThemByWalkingTheGraph()
    {
        using var dir = new TempDir();
        var found = Graph1(dir).FindPrunable();

        Assert.Equal(["927", "onnx::MatMul_12", "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"], found.Select(p => p.Name));

        var q = found[0];
        Assert.Equal(("MatMul_34", "MatMul", "encoder.layer.2.attention.self.query", 2, "query", true), (q.NodeName, q.OpType, q.Module, q.Layer, q.Role, q.OutputIsColumn));
        Assert.Equal((6L, 8L), (q.InFeatures, q.OutFeatures));

        var inter = found[1];
        Assert.Equal(("encoder.layer.1.intermediate.dense", 1, "intermediate", true), (inter.Module, inter.Layer, inter.Role, inter.OutputIsColumn));
        Assert.Equal((8L, 16L), (inter.InFeatures, inter.OutFeatures));

        var up = found[2];
        Assert.Equal(("model.layers.0.mlp.up_proj", 0, "mlp.up_proj", false), (up.Module, up.Layer, up.Role, up.OutputIsColumn));
        Assert.Equal((8L, 16L), (up.InFeatures, up.OutFeatures)); // stored [out, in]

        var down = found[3];
        Assert.True(down.OutputIsColumn); // transB=0: stored [in, out]
        Assert.Equal((8L, 16L), (down.InFeatures, down.OutFeatures));
    }

    [Fact]
    public void WeightsOutsideNumberedBlocksAreListedOnlyWhenAskedFor()
    {
        using var dir = new TempDir();
        var all = Graph1(dir).FindPrunable(includeOutsideLayers: true);
        var pooler = Assert.Single(all, p => p.Layer is null);
        Assert.Equal(("pooler.dense.weight", "pooler.dense", null, false), (pooler.Name, pooler.Module, pooler.Role, pooler.OutputIsColumn));
        Assert.Equal(5, all.Count);
    }

    [Fact]
    public void AWeightUsedWithTwoOrientationsIsLeftOut()
    {
        using var dir = new TempDir();
        var bytes = Model(Graph(
            [RawTensor("model.layers.0.w.weight", FLOAT, [4, 4], new byte[64])],
            [
                Node("MatMul", "a", ["x", "model.layers.0.w.weight"], ["y"]),
                Node("Gemm", "b", ["x", "model.layers.0.w.weight"], ["z"], ("transB", 1)),
            ]));
        var path = dir.File("tied.onnx");
        File.WriteAllBytes(path, bytes);
        Assert.Empty(OnnxModel.Read(path).FindPrunable(includeOutsideLayers: true));
    }

    [Theory]
    [InlineData("encoder.layer.3.attention.self.query", 3, "query")]
    [InlineData("encoder.layer.3.attention.self.key", 3, "key")]
    [InlineData("encoder.layer.3.attention.self.value", 3, "value")]
    [InlineData("encoder.layer.0.attention.output.dense", 0, "attention.output")]
    [InlineData("encoder.layer.5.intermediate.dense", 5, "intermediate")]
    [InlineData("encoder.layer.5.output.dense", 5, "output")]
    [InlineData("model.layers.12.self_attn.q_proj", 12, "self_attn.q_proj")]
    [InlineData("transformer.h.7.mlp.c_fc", 7, "mlp.c_fc")]
    [InlineData("pooler.dense", null, null)]
    [InlineData("encoder.layers", null, null)]
    [InlineData("layer.2", 2, null)]
    [InlineData("mylayer.2.dense", null, null)]
    public void SplitsModuleNamesIntoLayerAndRole(string module, int? layer, string? role)
    {
        Assert.Equal((layer, role), OnnxPrunableWeights.LayerAndRole(module));
    }
}
