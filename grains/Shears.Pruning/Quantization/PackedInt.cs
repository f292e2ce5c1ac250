namespace Shears.Pruning.Quantization;

/// <summary>
/// compressed-tensors' int32 packing (pack_to_int32): each value has 2^(bits−1) added and becomes an unsigned
/// <c>bits</c>-bit field; element j of each run of 32/bits consecutive values is shifted left by bits·j (the first
/// value in the lowest bits); a short last run is padded with zero fields. Weights are packed along their rows
/// (dimension 1), zero points along their columns (dimension 0).
/// </summary>
public static class PackedInt
{
    /// <summary>Words needed for <paramref name="count"/> values of <paramref name="bits"/> bits.</summary>
    public static long Words(long count, int bits) => (count + 32 / bits - 1) / (32 / bits);

    /// <summary>Packs one row of values into <see cref="Words"/> words.</summary>
    public static void PackRow(ReadOnlySpan<sbyte> values, int bits, Span<int> words)
    {
        CheckBits(bits);
        int per = 32 / bits, offset = 1 << (bits - 1);
        uint fieldMask = (1u << bits) - 1;
        if (words.Length != Words(values.Length, bits))
            throw new ArgumentException($"{values.Length} values of {bits} bits take {Words(values.Length, bits)} words, got {words.Length}", nameof(words));
        for (int w = 0; w < words.Length; w++)
        {
            uint word = 0;
            int first = w * per, count = Math.Min(per, values.Length - first);
            for (int j = 0; j < count; j++) word |= ((uint)(values[first + j] + offset) & fieldMask) << (bits * j);
            words[w] = (int)word;
        }
    }

    /// <summary>Unpacks <paramref name="values"/>.Length values of one row (padding dropped).</summary>
    public static void UnpackRow(ReadOnlySpan<int> words, int bits, Span<sbyte> values)
    {
        CheckBits(bits);
        int per = 32 / bits, offset = 1 << (bits - 1);
        uint fieldMask = (1u << bits) - 1;
        if (words.Length != Words(values.Length, bits))
            throw new ArgumentException($"{values.Length} values of {bits} bits take {Words(values.Length, bits)} words, got {words.Length}", nameof(words));
        for (int i = 0; i < values.Length; i++)
            values[i] = (sbyte)((int)(((uint)words[i / per] >> (bits * (i % per))) & fieldMask) - offset);
    }

    /// <summary>
    /// Packs a row-major [rows, columns] matrix along dimension 0 into [ceil(rows / (32/bits)), columns] words: word
    /// (r / per, c) holds value (r, c) in field r % per.
    /// </summary>
    public static void PackColumns(ReadOnlySpan<sbyte> values, int rows, int columns, int bits, Span<int> words)
    {
        CheckBits(bits);
        int per = 32 / bits, offset = 1 << (bits - 1);
        uint fieldMask = (1u << bits) - 1;
        if (values.Length != (long)rows * columns) throw new ArgumentException($"[{rows}, {columns}] holds {(long)rows * columns} values, got {values.Length}", nameof(values));
        if (words.Length != Words(rows, bits) * columns)
            throw new ArgumentException($"[{rows}, {columns}] packs into {Words(rows, bits) * columns} words, got {words.Length}", nameof(words));
        words.Clear();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                words[r / per * columns + c] = (int)((uint)words[r / per * columns + c] | (((uint)(values[r * columns + c] + offset) & fieldMask) << (bits * (r % per))));
    }

    /// <summary>The inverse of <see cref="PackColumns"/>.</summary>
    public static void UnpackColumns(ReadOnlySpan<int> words, int rows, int columns, int bits, Span<sbyte> values)
    {
        CheckBits(bits);
        int per = 32 / bits, offset = 1 << (bits - 1);
        uint fieldMask = (1u << bits) - 1;
        if (values.Length != (long)rows * columns) throw new ArgumentException($"[{rows}, {columns}] holds {(long)rows * columns} values, got {values.Length}", nameof(values));
        if (words.Length != Words(rows, bits) * columns)
            throw new ArgumentException($"[{rows}, {columns}] packs into {Words(rows, bits) * columns} words, got {words.Length}", nameof(words));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                values[r * columns + c] = (sbyte)((int)(((uint)words[r / per * columns + c] >> (bits * (r % per))) & fieldMask) - offset);
    }

    private static void CheckBits(int bits)
    {
        if (bits is not (2 or 4 or 8)) throw new ArgumentOutOfRangeException(nameof(bits), bits, "values are packed with 2, 4 or 8 bits");
    }
}
