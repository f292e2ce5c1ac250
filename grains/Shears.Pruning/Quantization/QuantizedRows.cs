using System.Runtime.InteropServices;
using Shears.Pruning.Checkpoints;

namespace Shears.Pruning.Quantization;

/// <summary>
/// A block of rows of one weight matrix, quantized: the integer values and each group's parameters, with the error
/// against the weights they came from. Rows are output channels, columns input features (a Linear's [out, in]).
/// Column j of a row uses the row's group j / group size, or, with a group index (GPTQ's activation order, as
/// compressed-tensors' <c>weight_g_idx</c>), the row's group g_idx[j].
/// </summary>
public sealed class QuantizedRows
{
    private readonly sbyte[] _values;
    private readonly QuantParams[] _groups;
    private readonly int[]? _groupIndex;

    public QuantScheme Scheme { get; }
    public TensorDType DType { get; }
    public int Rows { get; }
    public int Columns { get; }
    public int GroupsPerRow { get; }

    /// <summary>Σ |w' − w| and max |w' − w| over the block, against the weights given (the pruned ones).</summary>
    public double AbsErrorSum { get; }
    public double MaxAbsError { get; }

    /// <summary>
    /// Takes quantized values (row-major [rows, columns]) and their groups' parameters ([rows, groups]), and measures
    /// them against <paramref name="reference"/> (the weights before quantization, same layout).
    /// <paramref name="groupIndex"/>: the group of each column ([columns], each in [0, groups)), grouped schemes only;
    /// null for consecutive groups.
    /// </summary>
    public QuantizedRows(QuantScheme scheme, TensorDType dtype, int rows, int columns, sbyte[] values, QuantParams[] groups, ReadOnlySpan<float> reference, int[]? groupIndex = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(groups);
        GroupsPerRow = checked((int)scheme.GroupsPerRow(columns));
        if (values.Length != (long)rows * columns) throw new ArgumentException($"[{rows}, {columns}] needs {(long)rows * columns} values, got {values.Length}", nameof(values));
        if (groups.Length != (long)rows * GroupsPerRow) throw new ArgumentException($"[{rows}, {GroupsPerRow}] groups expected, got {groups.Length}", nameof(groups));
        if (reference.Length != values.Length) throw new ArgumentException($"{values.Length} reference weights expected, got {reference.Length}", nameof(reference));
        if (groupIndex is not null)
        {
            if (scheme.PerChannel) throw new ArgumentException($"a per-channel scheme ({scheme.Name}) has no group index", nameof(groupIndex));
            if (groupIndex.Length != columns) throw new ArgumentException($"{columns} columns need a group index of {columns}, got {groupIndex.Length}", nameof(groupIndex));
            for (int c = 0; c < columns; c++)
                if ((uint)groupIndex[c] >= (uint)GroupsPerRow)
                    throw new ArgumentException($"g_idx[{c}] = {groupIndex[c]} is not one of the {GroupsPerRow} groups", nameof(groupIndex));
            groupIndex = (int[])groupIndex.Clone();
        }
        (Scheme, DType, Rows, Columns, _values, _groups, _groupIndex) = (scheme, dtype, rows, columns, values, groups, groupIndex);
        double sum = 0, max = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                int i = r * columns + c;
                double error = Math.Abs(GroupQuantizer.Dequantize(values[i], groups[r * GroupsPerRow + GroupOf(c)], dtype) - (double)reference[i]);
                sum += error;
                if (error > max) max = error;
            }
        (AbsErrorSum, MaxAbsError) = (sum, max);
    }

    private QuantizedRows(QuantScheme scheme, TensorDType dtype, int rows, int columns, sbyte[] values, QuantParams[] groups, double absErrorSum, double maxAbsError, int[]? groupIndex = null)
    {
        (Scheme, DType, Rows, Columns, _values, _groups, AbsErrorSum, MaxAbsError, _groupIndex) = (scheme, dtype, rows, columns, values, groups, absErrorSum, maxAbsError, groupIndex);
        GroupsPerRow = checked((int)scheme.GroupsPerRow(columns));
    }

    private const uint FileMagic = 0x31525153; // "SQR1"

    /// <summary>
    /// Writes the block as it is (values, parameters, group index and errors), for a result that cannot be computed again
    /// identically (GPTQ's, which depends on the calibration inputs) to outlive the process; <see cref="ReadFrom"/> gives
    /// it back exactly. Little-endian: magic, rows, columns, groups per row, group index flag, error sum, max error,
    /// values, (scale, zero point) per group, group index.
    /// </summary>
    public void WriteTo(Stream stream)
    {
        using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        writer.Write(FileMagic);
        writer.Write(Rows);
        writer.Write(Columns);
        writer.Write(GroupsPerRow);
        writer.Write(_groupIndex is not null);
        writer.Write(AbsErrorSum);
        writer.Write(MaxAbsError);
        writer.Write(MemoryMarshal.AsBytes(_values.AsSpan()));
        foreach (var g in _groups)
        {
            writer.Write(g.Scale);
            writer.Write(g.ZeroPoint);
        }
        if (_groupIndex is not null) writer.Write(MemoryMarshal.AsBytes(_groupIndex.AsSpan()));
    }

    /// <summary>A block written by <see cref="WriteTo"/> for <paramref name="scheme"/> and <paramref name="dtype"/>; <paramref name="source"/> names it in errors.</summary>
    public static QuantizedRows ReadFrom(Stream stream, QuantScheme scheme, TensorDType dtype, string source)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (reader.ReadUInt32() != FileMagic) throw new InvalidDataException($"{source} is not a block of quantized rows");
            int rows = reader.ReadInt32(), columns = reader.ReadInt32(), groupsPerRow = reader.ReadInt32();
            if (rows < 0 || columns <= 0 || groupsPerRow != scheme.GroupsPerRow(columns))
                throw new InvalidDataException($"{source}: [{rows}, {columns}] with {groupsPerRow} groups per row does not fit {scheme.Name} (group size {scheme.GroupSize})");
            bool hasIndex = reader.ReadBoolean();
            double sum = reader.ReadDouble(), max = reader.ReadDouble();
            var values = new sbyte[(long)rows * columns];
            ReadExactly(reader, MemoryMarshal.AsBytes(values.AsSpan()));
            var groups = new QuantParams[(long)rows * groupsPerRow];
            for (int i = 0; i < groups.Length; i++) groups[i] = new QuantParams(reader.ReadSingle(), reader.ReadInt32());
            int[]? index = null;
            if (hasIndex)
            {
                index = new int[columns];
                ReadExactly(reader, MemoryMarshal.AsBytes(index.AsSpan()));
                foreach (int g in index)
                    if ((uint)g >= (uint)groupsPerRow) throw new InvalidDataException($"{source}: group index {g} is not one of the {groupsPerRow} groups");
            }
            if (stream.CanSeek && stream.Position != stream.Length) throw new InvalidDataException($"{source}: {stream.Length - stream.Position} bytes after the block");
            return new QuantizedRows(scheme, dtype, rows, columns, values, groups, sum, max, index);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{source} ends inside its block of quantized rows");
        }
    }

    // BinaryReader reads no further ahead than the primitive it returns, so its stream continues where it stopped.
    private static void ReadExactly(BinaryReader reader, Span<byte> into) => reader.BaseStream.ReadExactly(into);

    /// <summary>
    /// Round-to-nearest quantization of raw little-endian weights of <paramref name="dtype"/>, row by row (one row widened
    /// to fp32 at a time: the block's extra memory is a byte per weight).
    /// </summary>
    public static QuantizedRows RoundToNearest(ReadOnlySpan<byte> raw, TensorDType dtype, int rows, int columns, QuantScheme scheme, string tensor)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        int size = dtype.ElementSize();
        if (raw.Length != (long)rows * columns * size)
            throw new ArgumentException($"tensor '{tensor}': [{rows}, {columns}] {dtype} takes {(long)rows * columns * size} bytes, got {raw.Length}", nameof(raw));
        int groupsPerRow = checked((int)scheme.GroupsPerRow(columns));
        long width = scheme.GroupWidth(columns);
        var values = new sbyte[(long)rows * columns];
        var groups = new QuantParams[(long)rows * groupsPerRow];
        double sum = 0, max = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = Widen(raw.Slice(r * columns * size, columns * size), dtype, columns, tensor);
            var q = values.AsSpan(r * columns, columns);
            var p = groups.AsSpan(r * groupsPerRow, groupsPerRow);
            GroupQuantizer.QuantizeRow(row, scheme, dtype, q, p, tensor);
            for (int c = 0; c < columns; c++)
            {
                double error = Math.Abs(GroupQuantizer.Dequantize(q[c], p[(int)(c / width)], dtype) - (double)row[c]);
                sum += error;
                if (error > max) max = error;
            }
        }
        return new QuantizedRows(scheme, dtype, rows, columns, values, groups, sum, max);
    }

    /// <summary>fp32 copies of raw weights (F32, BF16 or F16).</summary>
    public static float[] Widen(ReadOnlySpan<byte> raw, TensorDType dtype, long count, string tensor)
    {
        if (raw.Length != count * dtype.ElementSize())
            throw new ArgumentException($"tensor '{tensor}': {count} {dtype} weights take {count * dtype.ElementSize()} bytes, got {raw.Length}", nameof(raw));
        var weights = new float[count];
        switch (dtype)
        {
            case TensorDType.F32: MemoryMarshal.Cast<byte, float>(raw).CopyTo(weights); break;
            case TensorDType.BF16:
                var bf16 = MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < weights.Length; i++) weights[i] = FloatBits.BFloat16ToSingle(bf16[i]);
                break;
            case TensorDType.F16:
                var f16 = MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < weights.Length; i++) weights[i] = FloatBits.HalfToSingle(f16[i]);
                break;
            default: throw new NotSupportedException($"tensor '{tensor}' is {dtype}: only F32, BF16 and F16 weights are quantized");
        }
        return weights;
    }

    public sbyte Value(int row, int column) => _values[row * Columns + column];

    /// <summary>Weights that dequantize to exactly 0.0 (q equal to the group's zero point): the masked ones among them.</summary>
    public long ZeroCount()
    {
        long zeros = 0;
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Columns; c++)
                if (_values[r * Columns + c] == _groups[r * GroupsPerRow + GroupOf(c)].ZeroPoint) zeros++;
        return zeros;
    }

    public QuantParams Group(int row, int group) => _groups[row * GroupsPerRow + group];

    /// <summary>Whether columns map to groups by <see cref="GroupIndex"/> rather than consecutively.</summary>
    public bool HasGroupIndex => _groupIndex is not null;

    /// <summary>The group of each column, [columns]; empty when the groups are consecutive.</summary>
    public ReadOnlySpan<int> GroupIndex => _groupIndex;

    /// <summary>The group whose parameters column <paramref name="column"/> is dequantized with.</summary>
    public int GroupOf(int column) =>
        _groupIndex is not null ? _groupIndex[column] : (int)(column / Scheme.GroupWidth(Columns));

    /// <summary><c>weight_g_idx</c>: int32 [columns], little-endian; null when the groups are consecutive.</summary>
    public byte[]? GroupIndexBytes() => _groupIndex is null ? null : MemoryMarshal.AsBytes(_groupIndex.AsSpan()).ToArray();

    /// <summary>The dequantized weights as raw <see cref="DType"/> bytes, [rows, columns]: what a loader computes.</summary>
    public byte[] DequantizedBytes()
    {
        var values = new float[_values.Length];
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Columns; c++)
                values[r * Columns + c] = GroupQuantizer.Dequantize(_values[r * Columns + c], _groups[r * GroupsPerRow + GroupOf(c)], DType);
        var raw = new byte[(long)values.Length * DType.ElementSize()];
        FloatBits.Store(values, DType, raw);
        return raw;
    }

    /// <summary><c>weight_packed</c>'s rows: int32 [rows, ceil(columns / (32/bits))], little-endian.</summary>
    public byte[] PackedBytes()
    {
        int words = checked((int)PackedInt.Words(Columns, Scheme.Bits));
        var packed = new int[(long)Rows * words];
        for (int r = 0; r < Rows; r++)
            PackedInt.PackRow(_values.AsSpan(r * Columns, Columns), Scheme.Bits, packed.AsSpan(r * words, words));
        return MemoryMarshal.AsBytes(packed.AsSpan()).ToArray();
    }

    /// <summary><c>weight_scale</c>'s rows: [rows, groups] in the weight's dtype.</summary>
    public byte[] ScaleBytes()
    {
        var scales = _groups.Select(g => g.Scale).ToArray();
        var raw = new byte[(long)scales.Length * DType.ElementSize()];
        FloatBits.Store(scales, DType, raw);
        return raw;
    }

    /// <summary>The zero points, [rows, groups] (all 0 for symmetric schemes).</summary>
    public sbyte[] ZeroPoints() => _groups.Select(g => (sbyte)g.ZeroPoint).ToArray();
}
