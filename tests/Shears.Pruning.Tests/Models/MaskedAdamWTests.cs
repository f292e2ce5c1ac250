using Shears.Pruning.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Tests.Models;

public class MaskedAdamWTests
{
    private static bool IsPositiveZero(float value) => BitConverter.SingleToInt32Bits(value) == 0;

    [Fact]
    public void WithoutMasksItIsPyTorchsAdamW()
    {
        manual_seed(3);
        using var ours = randn(4, 5).requires_grad_(true);
        using var theirs = new TorchSharp.Modules.Parameter(ours.detach().clone());
        using var optimizer = new MaskedAdamW(new Dictionary<string, Tensor> { ["w"] = ours }, learningRate: 0.05, weightDecay: 0.1);
        using var reference = optim.AdamW([theirs], lr: 0.05, weight_decay: 0.1);

        for (var step = 0; step < 4; step++)
        {
            using var scope = NewDisposeScope();
            var target = randn(4, 5);
            optimizer.ZeroGrad();
            reference.zero_grad();
            (ours - target).pow(2).sum().backward();
            (theirs - target).pow(2).sum().backward();
            optimizer.Step();
            reference.step();
        }

        Assert.Equal(4, optimizer.StepsOf("w"));
        Assert.True(ours.allclose(theirs, rtol: 1e-6, atol: 1e-7));
    }

    [Fact]
    public void MaskedWeightsStayExactlyZeroAndTheOthersMove()
    {
        var config = RandomLlama.Config(vocab: 32);
        var tensors = RandomLlama.Tensors(config, RandomLlama.Weights(config, seed: 9));
        var masks = new Dictionary<string, Tensor>();
        try
        {
            using var model = LlamaModel.FromTensors(config, tensors, CPU);
            model.SetRequiresGrad(true);
            manual_seed(8);
            foreach (var name in model.Parameters.Keys.Where(n => n.Contains("_proj.weight")))
            {
                masks[name] = rand(model.Parameters[name].shape).lt(0.5).DetachFromDisposeScope();
            }
            // A float mask (1 = pruned) is accepted too.
            masks["lm_head.weight"] = rand(32, 16).lt(0.3).to(ScalarType.Float32).DetachFromDisposeScope();
            var before = model.Parameters.ToDictionary(p => p.Key, p => p.Value.detach().clone().DetachFromDisposeScope());

            using var optimizer = new MaskedAdamW(model.Parameters, masks, learningRate: 0.01);
            var ids = tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8 }, [2, 6]).DetachFromDisposeScope();
            var losses = new List<float>();
            for (var step = 0; step < 5; step++)
            {
                using var scope = NewDisposeScope();
                optimizer.ZeroGrad();
                var loss = Perplexity.Loss(model.Forward(ids), ids);
                losses.Add(loss.item<float>());
                loss.backward();
                optimizer.Step();

                foreach (var (name, mask) in masks)
                {
                    var weight = model.Parameters[name];
                    var pruned = mask.ne(0);
                    Assert.All(weight.masked_select(pruned).data<float>().ToArray(), v => Assert.True(IsPositiveZero(v), $"{name}: {v} at a pruned position"));
                    Assert.Equal(0f, weight.grad!.masked_select(pruned).abs().sum().item<float>());
                    var moved = weight.masked_select(pruned.logical_not()).ne(before[name].masked_select(pruned.logical_not()));
                    Assert.True(moved.all().item<bool>(), $"{name}: every kept weight moves");
                }
            }
            Assert.True(losses[^1] < losses[0], $"the loss falls: {string.Join(", ", losses)}");
            Assert.True(model.Parameters["model.norm.weight"].ne(before["model.norm.weight"]).all().item<bool>());
            foreach (var t in before.Values)
            {
                t.Dispose();
            }
            ids.Dispose();
        }
        finally
        {
            RandomLlama.DisposeAll(tensors);
            RandomLlama.DisposeAll(masks);
        }
    }

    [Fact]
    public void ANewMaskClearsTheMomentsAtItsPositions()
    {
        using var w = tensor(new float[] { 1, -2, 3, -4 }).requires_grad_(true);
        using var optimizer = new MaskedAdamW(new Dictionary<string, Tensor> { ["w"] = w }, learningRate: 0.1, weightDecay: 0);
        for (var step = 0; step < 3; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.ZeroGrad();
            (w * tensor(new float[] { 1, 1, 1, 1 })).sum().backward();
            optimizer.Step();
        }

        using (var mask = tensor(new[] { false, true, false, true }))
        {
            optimizer.SetMask("w", mask);
        }
        var values = w.data<float>().ToArray();
        Assert.True(IsPositiveZero(values[1]) && IsPositiveZero(values[3]), "masked at once, as +0.0");

        // Unmasked again with a zero gradient: only momentum could move the formerly pruned weights.
        optimizer.SetMask("w", null);
        optimizer.ZeroGrad();
        optimizer.Step();
        var after = w.data<float>().ToArray();
        Assert.Equal(0f, after[1]);
        Assert.Equal(0f, after[3]);
        Assert.NotEqual(values[0], after[0]);
    }

    [Fact]
    public void RefusesMasksThatDoNotFit()
    {
        using var w = zeros(2, 3);
        using var wrong = zeros(3, 2);
        var weights = new Dictionary<string, Tensor> { ["w"] = w };

        var shape = Assert.Throws<ArgumentException>(() => new MaskedAdamW(weights, new Dictionary<string, Tensor> { ["w"] = wrong }));
        Assert.Contains("[3, 2]", shape.Message);
        var unknown = Assert.Throws<ArgumentException>(() => new MaskedAdamW(weights, new Dictionary<string, Tensor> { ["v"] = wrong }));
        Assert.Contains("'v'", unknown.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new MaskedAdamW(weights, learningRate: -1));
        using var optimizer = new MaskedAdamW(weights);
        Assert.Throws<KeyNotFoundException>(() => optimizer.SetMask("v", null));
    }
}
