using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Encoders;

/// <summary>
/// One post-norm BERT encoder layer, hidden [B, T, hidden] to hidden: bidirectional self-attention over the
/// unpadded positions, dense, residual, LayerNorm; then intermediate dense, GELU, output dense, residual, LayerNorm.
/// The matrices are stored [in, out], as the ONNX MatMul weights are: y = x·W + b.
/// </summary>
public sealed class BertLayer : BertStage
{
    private BertLayer(BertConfig config, int layerIndex, BertLayerNames names, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype)
        : base(config, $"encoder layer {layerIndex}", device, dtype)
    {
        LayerIndex = layerIndex;
        Names = names;
        // A layer's attention width (heads × head_dim) and FFN width are its own: a removal may have left each layer others.
        long hidden = config.HiddenSize;
        long width = tensors.TryGetValue(names.Query, out var query) && query.dim() == 2 ? query.shape[1] : (long)config.NumAttentionHeads * config.HeadDim;
        long inter = tensors.TryGetValue(names.Intermediate, out var intermediate) && intermediate.dim() == 2 ? intermediate.shape[1] : config.IntermediateSize;
        if (width <= 0 || width % config.HeadDim != 0 || inter <= 0)
        {
            throw new ArgumentException(
                $"encoder layer {layerIndex}: the query weight '{names.Query}' is {width} wide, not a positive multiple of the head width {config.HeadDim}, or the FFN '{names.Intermediate}' is empty.");
        }
        Heads = (int)(width / config.HeadDim);
        AttentionWidth = width;
        try
        {
            Query = Take(tensors, names.Query, "query", hidden, width);
            QueryBias = Take(tensors, names.QueryBias, "query bias", width);
            Key = Take(tensors, names.Key, "key", hidden, width);
            KeyBias = Take(tensors, names.KeyBias, "key bias", width);
            Value = Take(tensors, names.Value, "value", hidden, width);
            ValueBias = Take(tensors, names.ValueBias, "value bias", width);
            AttentionOutput = Take(tensors, names.AttentionOutput, "attention output", width, hidden);
            AttentionOutputBias = Take(tensors, names.AttentionOutputBias, "attention output bias", hidden);
            AttentionNormWeight = Take(tensors, names.AttentionNormWeight, "attention LayerNorm weight", hidden);
            AttentionNormBias = Take(tensors, names.AttentionNormBias, "attention LayerNorm bias", hidden);
            Intermediate = Take(tensors, names.Intermediate, "intermediate", hidden, inter);
            IntermediateBias = Take(tensors, names.IntermediateBias, "intermediate bias", inter);
            Output = Take(tensors, names.Output, "output", inter, hidden);
            OutputBias = Take(tensors, names.OutputBias, "output bias", hidden);
            OutputNormWeight = Take(tensors, names.OutputNormWeight, "output LayerNorm weight", hidden);
            OutputNormBias = Take(tensors, names.OutputNormBias, "output LayerNorm bias", hidden);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int LayerIndex { get; }

    /// <summary>This layer's attention heads (the config's count, or fewer once heads were removed).</summary>
    public int Heads { get; }

    /// <summary>Heads × head_dim: the width of the query, key and value projections.</summary>
    public long AttentionWidth { get; }

    public BertLayerNames Names { get; }

    public Tensor Query { get; }
    public Tensor QueryBias { get; }
    public Tensor Key { get; }
    public Tensor KeyBias { get; }
    public Tensor Value { get; }
    public Tensor ValueBias { get; }
    public Tensor AttentionOutput { get; }
    public Tensor AttentionOutputBias { get; }
    public Tensor AttentionNormWeight { get; }
    public Tensor AttentionNormBias { get; }
    public Tensor Intermediate { get; }
    public Tensor IntermediateBias { get; }
    public Tensor Output { get; }
    public Tensor OutputBias { get; }
    public Tensor OutputNormWeight { get; }
    public Tensor OutputNormBias { get; }

    /// <summary>
    /// Builds layer <paramref name="layerIndex"/> from tensors by checkpoint name (others are ignored, so a whole
    /// checkpoint's map will do). A weight shares storage with the given tensor when no conversion is needed.
    /// </summary>
    public static BertLayer FromTensors(BertConfig config, int layerIndex, BertLayerNames names, IReadOnlyDictionary<string, Tensor> tensors,
        Device device, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegative(layerIndex);
        if (layerIndex >= config.NumHiddenLayers)
        {
            throw new ArgumentOutOfRangeException(nameof(layerIndex), $"Layer {layerIndex} does not exist; num_hidden_layers is {config.NumHiddenLayers}.");
        }
        return new BertLayer(config, layerIndex, names, tensors, device, dtype);
    }

    /// <summary>
    /// When set, Forward hands it the input of every weight matrix (by the matrix's initializer name):
    /// calibration statistics for Wanda and SparseGPT. The tensor is only valid during the call.
    /// </summary>
    public Action<string, Tensor>? Capture { get; set; }

    /// <summary>
    /// Hidden states [B, T, hidden] and the padding mask [B, T] (1 = a real token, 0 = padding; any numeric or bool
    /// type) to the next hidden states, in the caller's dispose scope. Padded keys get (1 − 0)·−10000 added to
    /// their scores, as BERT does; padded queries are computed too, as the exported graph computes them.
    /// </summary>
    public Tensor Forward(Tensor hidden, Tensor attentionMask)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(attentionMask);
        ThrowIfDisposed();
        CheckHidden(hidden, Config, nameof(hidden));
        var (batch, length) = (hidden.shape[0], hidden.shape[1]);
        if (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] != length)
        {
            throw new ArgumentException(
                $"The attention mask has shape [{string.Join(", ", attentionMask.shape)}]; the hidden states need [{batch}, {length}].", nameof(attentionMask));
        }
        using var scope = NewDisposeScope();
        if (Capture is null && !is_grad_enabled()) return Infer(hidden, attentionMask).MoveToOuterDisposeScope();
        var c = Config;
        long heads = Heads, headDim = c.HeadDim;
        var x = hidden.to(DType, Device);
        if (Capture is { } capture)
        {
            capture(Names.Query, x);
            capture(Names.Key, x);
            capture(Names.Value, x);
        }

        var q = x.matmul(Query).Plus(QueryBias).view(batch, length, heads, headDim).transpose(1, 2);
        var k = x.matmul(Key).Plus(KeyBias).view(batch, length, heads, headDim).transpose(1, 2);
        var v = x.matmul(Value).Plus(ValueBias).view(batch, length, heads, headDim).transpose(1, 2);
        using var root = Math.Sqrt(headDim).ToScalar(); // held: see BertOps
        var scores = q.matmul(k.transpose(2, 3)).div(root);
        scores = scores.Plus(BertOps.AdditiveMask(attentionMask.to(Device), c.MaskedScore, scores.dtype));
        var weights = scores.softmax(-1, ScalarType.Float32).to(q.dtype);
        var attended = weights.matmul(v).transpose(1, 2).reshape(batch, length, heads * headDim);
        Capture?.Invoke(Names.AttentionOutput, attended);
        var h = BertOps.LayerNorm(attended.matmul(AttentionOutput).Plus(AttentionOutputBias).Plus(x), AttentionNormWeight, AttentionNormBias, c.LayerNormEps);

        Capture?.Invoke(Names.Intermediate, h);
        var inner = BertOps.Gelu(h.matmul(Intermediate).Plus(IntermediateBias));
        Capture?.Invoke(Names.Output, inner);
        var y = BertOps.LayerNorm(inner.matmul(Output).Plus(OutputBias).Plus(h), OutputNormWeight, OutputNormBias, c.LayerNormEps);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Forward for inference (no gradient, no capture): the same function with libtorch's fused kernels — the bias added
    /// inside each matrix product, one LayerNorm and one GELU kernel, fused attention — equal to the op-by-op graph within
    /// float rounding, several times fewer passes over the activations. Training and calibration keep the graph's ops.
    /// The residual additions pass a held alpha: the implicit one of add_(Tensor) can be finalized mid-call.
    /// </summary>
    private Tensor Infer(Tensor hidden, Tensor attentionMask)
    {
        var c = Config;
        var (batch, length) = (hidden.shape[0], hidden.shape[1]);
        long heads = Heads, headDim = c.HeadDim, width = c.HiddenSize;
        var x = hidden.to(DType, Device).reshape(batch * length, width);
        Tensor Split(Tensor w, Tensor b) => addmm(b, x, w, 1, 1).view(batch, length, heads, headDim).transpose(1, 2);
        var mask = BertOps.AdditiveMask(attentionMask.to(Device), c.MaskedScore, x.dtype);
        var attended = nn.functional.scaled_dot_product_attention(Split(Query, QueryBias), Split(Key, KeyBias), Split(Value, ValueBias), mask)
            .transpose(1, 2).reshape(batch * length, AttentionWidth);
        long[] normalized = [width];
        var h = nn.functional.layer_norm(addmm(AttentionOutputBias, attended, AttentionOutput, 1, 1).add_(x, HeldScalars.One), normalized, AttentionNormWeight, AttentionNormBias, c.LayerNormEps);
        var inner = nn.functional.gelu(addmm(IntermediateBias, h, Intermediate, 1, 1));
        var y = nn.functional.layer_norm(addmm(OutputBias, inner, Output, 1, 1).add_(h, HeldScalars.One), normalized, OutputNormWeight, OutputNormBias, c.LayerNormEps);
        return y.view(batch, length, width);
    }

    internal static void CheckHidden(Tensor hidden, BertConfig config, string parameter)
    {
        if (hidden.dim() != 3 || hidden.shape[2] != config.HiddenSize)
        {
            throw new ArgumentException(
                $"Hidden states must have shape [batch, length, {config.HiddenSize}]; got [{string.Join(", ", hidden.shape)}].", parameter);
        }
    }
}
