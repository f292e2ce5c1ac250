using Shears.Pruning;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Models;

/// <summary>
/// One decoder layer, hidden [B, T, hidden] to hidden: pre-norm grouped-query causal self-attention
/// with rotary embeddings, then a pre-norm SiLU-gated MLP, each added to the residual stream.
/// Positions are 0..T−1 for every sequence of the batch (no cache, no left padding).
/// </summary>
public sealed class LlamaDecoderLayer : LlamaStage
{
    private readonly Tensor _inverseFrequencies;

    private LlamaDecoderLayer(LlamaConfig config, int layerIndex, IReadOnlyDictionary<string, Tensor> tensors, Device device, ScalarType dtype, LlamaLayerPart part)
        : base(config, part switch
        {
            LlamaLayerPart.Attention => $"attention of decoder layer {layerIndex}",
            LlamaLayerPart.Mlp => $"MLP of decoder layer {layerIndex}",
            _ => $"decoder layer {layerIndex}",
        }, device, dtype)
    {
        LayerIndex = layerIndex;
        Part = part;
        var p = LlamaWeights.LayerPrefix(layerIndex);
        long hidden = config.HiddenSize, q = config.QueryWidth, kv = config.KeyValueWidth, inter = config.IntermediateSize;
        try
        {
            if (part != LlamaLayerPart.Mlp) TakeAttention(config, tensors, p, hidden, q, kv);
            if (part != LlamaLayerPart.Attention) TakeMlp(config, tensors, p, hidden, inter);
            _inverseFrequencies = KeepBuffer(LlamaOps.InverseFrequencies(config, device));
            Window = config.WindowOf(layerIndex);
            foreach (var name in tensors.Keys)
            {
                // A half ignores the other half's tensors, as a layer ignores other layers'.
                if (name.StartsWith(p, StringComparison.Ordinal) && !Parameters.ContainsKey(name) && !LlamaWeights.IsBuffer(name)
                    && (part == LlamaLayerPart.Whole || LlamaWeights.PartOf(name) == part))
                {
                    throw new ArgumentException($"Tensor '{name}' is not part of a {config.ModelType} decoder layer as Shears computes it; the {Description} cannot run with it.");
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private void TakeAttention(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, string p, long hidden, long q, long kv)
    {
        InputNorm = Take(tensors, p + "input_layernorm.weight", hidden);
        QProj = Take(tensors, p + "self_attn.q_proj.weight", q, hidden);
        KProj = Take(tensors, p + "self_attn.k_proj.weight", kv, hidden);
        VProj = Take(tensors, p + "self_attn.v_proj.weight", kv, hidden);
        OProj = Take(tensors, p + "self_attn.o_proj.weight", hidden, q);
        // attention_bias puts a bias on all four projections; Qwen2-style checkpoints carry q/k/v biases without the flag.
        QBias = TakeOptional(tensors, p + "self_attn.q_proj.bias", config.AttentionBias, q);
        KBias = TakeOptional(tensors, p + "self_attn.k_proj.bias", config.AttentionBias, kv);
        VBias = TakeOptional(tensors, p + "self_attn.v_proj.bias", config.AttentionBias, kv);
        OBias = TakeOptional(tensors, p + "self_attn.o_proj.bias", config.AttentionBias, hidden);
        // Qwen3 normalizes each query and key head (over head_dim) before the rotary embedding.
        QNorm = TakeOptional(tensors, p + "self_attn.q_norm.weight", config.QueryKeyNorm, config.HeadDim);
        KNorm = TakeOptional(tensors, p + "self_attn.k_norm.weight", config.QueryKeyNorm, config.HeadDim);
        if (!config.QueryKeyNorm && (QNorm ?? KNorm) is not null)
        {
            throw new ArgumentException(
                $"Tensor '{p}self_attn.{(QNorm is null ? "k" : "q")}_norm.weight' belongs to a model_type with query/key norms (\"qwen3\"); config.json says \"{config.ModelType}\".");
        }
    }

    private void TakeMlp(LlamaConfig config, IReadOnlyDictionary<string, Tensor> tensors, string p, long hidden, long inter)
    {
        PostAttentionNorm = Take(tensors, p + "post_attention_layernorm.weight", hidden);
        GateProj = Take(tensors, p + "mlp.gate_proj.weight", inter, hidden);
        UpProj = Take(tensors, p + "mlp.up_proj.weight", inter, hidden);
        DownProj = Take(tensors, p + "mlp.down_proj.weight", hidden, inter);
        GateBias = TakeOptional(tensors, p + "mlp.gate_proj.bias", config.MlpBias, inter);
        UpBias = TakeOptional(tensors, p + "mlp.up_proj.bias", config.MlpBias, inter);
        DownBias = TakeOptional(tensors, p + "mlp.down_proj.bias", config.MlpBias, hidden);
    }

    public int LayerIndex { get; }

    /// <summary>The sliding attention window (a token attends to itself and the window − 1 before it), or null for full causal attention.</summary>
    public int? Window { get; }

    /// <summary>Which half of the layer this is (or the whole); a half holds only its own tensors.</summary>
    public LlamaLayerPart Part { get; }

    private Tensor? _inputNorm;
    public Tensor InputNorm { get => Held(_inputNorm, "attention"); private set => _inputNorm = value; }
    private Tensor? _qProj;
    public Tensor QProj { get => Held(_qProj, "attention"); private set => _qProj = value; }
    private Tensor? _kProj;
    public Tensor KProj { get => Held(_kProj, "attention"); private set => _kProj = value; }
    private Tensor? _vProj;
    public Tensor VProj { get => Held(_vProj, "attention"); private set => _vProj = value; }
    private Tensor? _oProj;
    public Tensor OProj { get => Held(_oProj, "attention"); private set => _oProj = value; }
    public Tensor? QBias { get; private set; }
    public Tensor? KBias { get; private set; }
    public Tensor? VBias { get; private set; }
    public Tensor? OBias { get; private set; }
    public Tensor? QNorm { get; private set; }
    public Tensor? KNorm { get; private set; }
    private Tensor? _postAttentionNorm;
    public Tensor PostAttentionNorm { get => Held(_postAttentionNorm, "MLP"); private set => _postAttentionNorm = value; }
    private Tensor? _gateProj;
    public Tensor GateProj { get => Held(_gateProj, "MLP"); private set => _gateProj = value; }
    private Tensor? _upProj;
    public Tensor UpProj { get => Held(_upProj, "MLP"); private set => _upProj = value; }
    private Tensor? _downProj;
    public Tensor DownProj { get => Held(_downProj, "MLP"); private set => _downProj = value; }
    public Tensor? GateBias { get; private set; }
    public Tensor? UpBias { get; private set; }
    public Tensor? DownBias { get; private set; }

    private Tensor Held(Tensor? tensor, string half) =>
        tensor ?? throw new InvalidOperationException($"The {Description} holds no {half} weights.");

    /// <summary>
    /// Builds layer <paramref name="layerIndex"/> from tensors named model.layers.{i}.… (others are ignored,
    /// so a whole checkpoint's map will do). A weight shares storage with the given tensor when no
    /// conversion to <paramref name="device"/> and <paramref name="dtype"/> is needed.
    /// </summary>
    public static LlamaDecoderLayer FromTensors(LlamaConfig config, int layerIndex, IReadOnlyDictionary<string, Tensor> tensors,
        Device device, ScalarType dtype = ScalarType.Float32, LlamaLayerPart part = LlamaLayerPart.Whole)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegative(layerIndex);
        if (layerIndex >= config.NumHiddenLayers)
        {
            throw new ArgumentOutOfRangeException(nameof(layerIndex),
                $"Layer {layerIndex} does not exist; num_hidden_layers is {config.NumHiddenLayers}.");
        }
        return new LlamaDecoderLayer(config, layerIndex, tensors, device, dtype, part);
    }

    /// <summary>
    /// When set, Forward hands it the input of every linear projection (by the weight's HF name):
    /// calibration statistics for Wanda and SparseGPT. The tensor is only valid during the call.
    /// </summary>
    public Action<string, Tensor>? Capture { get; set; }

    private string Name(string projection) => $"{LlamaWeights.LayerPrefix(LayerIndex)}{projection}.weight";

    public override Tensor Forward(Tensor hidden)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ThrowIfDisposed();
        CheckHidden(hidden, Config, nameof(hidden));
        using var scope = NewDisposeScope();
        var c = Config;
        var (batch, length) = (hidden.shape[0], hidden.shape[1]);
        var h = Part == LlamaLayerPart.Mlp ? hidden : Attention(hidden, batch, length);
        if (Part == LlamaLayerPart.Attention) return h.MoveToOuterDisposeScope();

        var y = LlamaOps.RmsNorm(h, PostAttentionNorm, c.RmsNormEps);
        Capture?.Invoke(Name("mlp.gate_proj"), y);
        Capture?.Invoke(Name("mlp.up_proj"), y);
        var gate = nn.functional.silu(nn.functional.linear(y, GateProj, GateBias));
        var product = gate * nn.functional.linear(y, UpProj, UpBias);
        Capture?.Invoke(Name("mlp.down_proj"), product);
        var mlp = nn.functional.linear(product, DownProj, DownBias);
        return h.Plus(mlp).MoveToOuterDisposeScope();
    }

    /// <summary>The attention half: the input plus self-attention of its normed states (in the caller's dispose scope).</summary>
    private Tensor Attention(Tensor hidden, long batch, long length)
    {
        var c = Config;
        long heads = c.NumAttentionHeads, kvHeads = c.NumKeyValueHeads, headDim = c.HeadDim;

        var x = LlamaOps.RmsNorm(hidden, InputNorm, c.RmsNormEps);
        if (Capture is { } capture)
        {
            capture(Name("self_attn.q_proj"), x);
            capture(Name("self_attn.k_proj"), x);
            capture(Name("self_attn.v_proj"), x);
        }
        var q = nn.functional.linear(x, QProj, QBias).view(batch, length, heads, headDim);
        var k = nn.functional.linear(x, KProj, KBias).view(batch, length, kvHeads, headDim);
        if (QNorm is not null)
        {
            q = LlamaOps.RmsNorm(q, QNorm, c.RmsNormEps);
        }
        if (KNorm is not null)
        {
            k = LlamaOps.RmsNorm(k, KNorm, c.RmsNormEps);
        }
        q = q.transpose(1, 2);
        k = k.transpose(1, 2);
        var v = nn.functional.linear(x, VProj, VBias).view(batch, length, kvHeads, headDim).transpose(1, 2);

        var (cos, sin) = LlamaOps.RotaryTables(_inverseFrequencies, length, q.dtype);
        q = LlamaOps.ApplyRotary(q, cos, sin);
        k = LlamaOps.ApplyRotary(k, cos, sin);
        if (c.KeyValueGroups > 1)
        {
            // Query head h reads key/value head h / groups.
            k = RepeatKeyValue(k, c.KeyValueGroups);
            v = RepeatKeyValue(v, c.KeyValueGroups);
        }

        using var scale = Math.Pow(headDim, -0.5).ToScalar(); // held: see MaskedAdamW.Step
        var scores = q.matmul(k.transpose(2, 3)).mul(scale);
        using (var future = MaskedPositions(length, hidden.device))
        {
            // An explicit Scalar held to the end of the scope: an implicit one may be finalized while
            // libtorch still reads it (seen here as a sporadic "toFloat" failure under GC pressure).
            using var negativeInfinity = double.NegativeInfinity.ToScalar();
            scores = scores.masked_fill(future, negativeInfinity);
        }
        var weights = scores.softmax(-1, ScalarType.Float32).to(q.dtype);
        var attended = weights.matmul(v).transpose(1, 2).reshape(batch, length, heads * headDim);
        Capture?.Invoke(Name("self_attn.o_proj"), attended);
        return hidden.Plus(nn.functional.linear(attended, OProj, OBias));
    }

    /// <summary>The positions a query may not read: later tokens, and with a window those window or more tokens before it.</summary>
    private Tensor MaskedPositions(long length, Device device)
    {
        var future = ones(length, length, ScalarType.Bool, device).triu(1);
        if (Window is not { } window || window >= length)
        {
            return future;
        }
        using var past = ones(length, length, ScalarType.Bool, device).tril(-window);
        using (future)
        {
            return future.logical_or(past);
        }
    }

    private static Tensor RepeatKeyValue(Tensor kv, int groups)
    {
        var (batch, kvHeads, length, headDim) = (kv.shape[0], kv.shape[1], kv.shape[2], kv.shape[3]);
        return kv.unsqueeze(2).expand(batch, kvHeads, groups, length, headDim).reshape(batch, kvHeads * groups, length, headDim);
    }

    internal static void CheckHidden(Tensor hidden, LlamaConfig config, string parameter)
    {
        if (hidden.dim() != 3 || hidden.shape[2] != config.HiddenSize)
        {
            throw new ArgumentException(
                $"Hidden states must have shape [batch, length, {config.HiddenSize}]; got [{string.Join(", ", hidden.shape)}].", parameter);
        }
    }
}
