using Shears.Pruning.Checkpoints;
using Shears.Pruning.Masks;
using TorchSharp;
using static TorchSharp.torch;

namespace Shears.Pruning.Quantization;

/// <summary>
/// The quantizer of a left-to-right column sweep (GPTQ, SparseGPT's joint mode): each column of a [rows, cols] weight
/// is rounded with the parameters of its row's group, which are taken when the sweep reaches the group's first
/// column, from the group's weights as the errors of the columns before it have left them (GPTQ's non-static groups;
/// a per-channel scheme is one group of the whole row, taken before any error has moved it). Masked weights count as
/// 0 in the parameters and are quantized to the zero point, so they dequantize to exactly +0.0 whatever value the
/// sweep has moved them to. Columns are numbered in sweep order. The quantized values stay on the weight's device
/// until <see cref="Values"/>; parameters and rounding are <see cref="GroupQuantizer"/>'s, bit for bit.
/// </summary>
internal sealed class ColumnQuantizer : IDisposable
{
    private readonly QuantScheme _scheme;
    private readonly TensorDType _dtype;
    private readonly long _rows, _cols;
    private readonly int _width, _groupsPerRow;
    private readonly string _tensorName;
    private readonly QuantParams[] _groups;
    private readonly Tensor _values;
    private readonly Scalar _qmin, _qmax;
    private Tensor? _scale, _zero;

    public ColumnQuantizer(QuantScheme scheme, TensorDType dtype, long rows, long cols, Device device, string tensorName)
    {
        (_scheme, _dtype, _rows, _cols, _tensorName) = (scheme, dtype, rows, cols, tensorName);
        _width = checked((int)scheme.GroupWidth(cols));
        _groupsPerRow = checked((int)scheme.GroupsPerRow(cols));
        _groups = new QuantParams[checked(rows * _groupsPerRow)];
        _values = zeros(rows, cols, ScalarType.Int8, device).DetachFromDisposeScope();
        // held for the quantizer's life: implicit Scalars can be finalized mid-call
        _qmin = ((double)scheme.QMin).ToScalar();
        _qmax = ((double)scheme.QMax).ToScalar();
    }

    /// <summary>Whether the sweep reaching <paramref name="column"/> starts a new group.</summary>
    public bool StartsGroup(long column) => column % _width == 0;

    /// <summary>Columns of the group starting at <paramref name="column"/> (the last may be short).</summary>
    public long WidthAt(long column) => Math.Min(_width, _cols - column);

    /// <summary>
    /// Takes the parameters of the group starting at <paramref name="column"/> from <paramref name="current"/>
    /// [rows, width], its columns' weights now, with the elements set in <paramref name="mask"/> (row-major over the
    /// sweep-ordered [rows, cols]) counted as 0.
    /// </summary>
    public void BeginGroup(long column, Tensor current, BitMask mask)
    {
        long width = WidthAt(column);
        int group = (int)(column / _width);
        float[] host;
        using (NewDisposeScope()) host = current.to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        var row = new float[width];
        var scales = new float[_rows];
        var zeroPoints = new float[_rows];
        for (long r = 0; r < _rows; r++)
        {
            for (long c = 0; c < width; c++) row[c] = mask[r * _cols + column + c] ? 0 : host[r * width + c];
            var p = _groups[r * _groupsPerRow + group] = GroupQuantizer.Params(row, _scheme, _dtype, _tensorName);
            (scales[r], zeroPoints[r]) = (p.Scale, p.ZeroPoint);
        }
        _scale?.Dispose();
        _zero?.Dispose();
        _scale = tensor(scales, device: _values.device).DetachFromDisposeScope();
        _zero = tensor(zeroPoints, device: _values.device).DetachFromDisposeScope();
    }

    /// <summary>
    /// Quantizes column <paramref name="column"/> (its weights now, [rows]; <paramref name="masked"/> bool [rows])
    /// and returns its dequantized values, rounded to the weight's dtype (in the caller's dispose scope).
    /// </summary>
    public Tensor Column(long column, Tensor weights, Tensor masked)
    {
        if (_scale is null || _zero is null) throw new InvalidOperationException("a group's parameters are needed before its columns");
        // w / scale + zp, rounded half to even and clamped: GroupQuantizer.Quantize's fp32 steps in the same order.
        var q = weights.div(_scale).add_(_zero, HeldScalars.One).round_().clamp_(_qmin, _qmax);
        q = where(masked, _zero, q);
        _values.select(1, column).copy_(q);
        var dequantized = q.sub_(_zero).mul_(_scale);
        return _dtype == TensorDType.F32 ? dequantized : dequantized.to(TorchType(_dtype)).to(ScalarType.Float32);
    }

    /// <summary>The quantized values, row-major [rows, cols] in sweep order.</summary>
    public sbyte[] Values()
    {
        using var scope = NewDisposeScope();
        return _values.cpu().contiguous().data<sbyte>().ToArray();
    }

    /// <summary>Each row's group parameters, [rows, groups], groups numbered in sweep order.</summary>
    public QuantParams[] Groups => _groups;

    public void Dispose()
    {
        _values.Dispose();
        _scale?.Dispose();
        _zero?.Dispose();
        _qmin.Dispose();
        _qmax.Dispose();
    }

    /// <summary>
    /// The weights now of columns [i1 + i, i1 + i + width) of a sweep at column i of the block that starts at
    /// <paramref name="i1"/>: the block's working copy <paramref name="w1"/> for its own columns, and for columns right
    /// of it the matrix <paramref name="w"/> less the lazy update the block still owes them from the errors
    /// <paramref name="err1"/> of its columns before i.
    /// </summary>
    public static Tensor Current(Tensor w, Tensor u, Tensor w1, Tensor err1, long i1, long i, long width)
    {
        long count = w1.shape[1], inside = Math.Min(width, count - i);
        var own = w1.narrow(1, i, inside);
        if (inside == width) return own;
        long start = i1 + count, outside = width - inside;
        var later = w.narrow(1, start, outside);
        if (i > 0) later = later.sub(err1.narrow(1, 0, i).mm(u.narrow(0, i1, i).narrow(1, start, outside)));
        return cat([own, later], 1);
    }

    public static void CheckDType(TensorDType dtype, string tensorName)
    {
        if (dtype is not (TensorDType.F32 or TensorDType.BF16 or TensorDType.F16))
            throw new ArgumentException($"tensor '{tensorName}' is quantized from F32, BF16 or F16 weights, not {dtype}", nameof(dtype));
    }

    private static ScalarType TorchType(TensorDType dtype) => dtype == TensorDType.BF16 ? ScalarType.BFloat16 : ScalarType.Float16;
}
