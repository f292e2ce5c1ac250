using System.Buffers.Binary;
using System.Text;

namespace Shears.Pruning.Models;

/// <summary>
/// A SentencePiece BPE model (<c>tokenizer.model</c>, as LLaMA-1/2 and Mistral ship it) encoding text the way
/// sentencepiece's own BPE encoder does: the text with a dummy-prefix space and every space written as U+2581 is
/// split into characters (a user-defined symbol stays whole); then, repeatedly, the adjacent pair whose concatenation
/// is the highest-scoring piece of the vocabulary merges, the leftmost pair first among equal scores; a symbol that is
/// not a piece becomes its UTF-8 bytes' <c>&lt;0xXX&gt;</c> pieces with byte fallback, else the unknown piece.
/// </summary>
/// <remarks>
/// Only what these models use is read: BPE models with the identity normalization (no precompiled character map),
/// with or without the dummy prefix, whitespace escaping and extra-whitespace removal. Other models are refused
/// naming the file and the field.
/// </remarks>
public sealed class SentencePieceBpe
{
    private const char Space = '\u2581';
    private enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    private readonly Dictionary<string, (int Id, float Score)> _pieces = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Id, float Score)>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly Dictionary<string, int> _userDefined = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _userDefinedLookup;
    private readonly int[] _byteIds = Enumerable.Repeat(-1, 256).ToArray();
    private readonly int _maxUserDefinedLength;
    private readonly bool _addDummyPrefix = true, _removeExtraWhitespaces = true, _escapeWhitespaces = true, _byteFallback;

    public int UnknownId { get; } = 0;
    public int BosId { get; } = 1;
    public int EosId { get; } = 2;
    public int VocabularySize { get; }

    private SentencePieceBpe(ReadOnlySpan<byte> model, string path)
    {
        int modelType = 1; // UNIGRAM unless the trainer spec says otherwise
        int id = 0;
        bool hasBytes = false;
        var reader = new Reader(model, path, "");
        while (reader.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2)
            {
                var p = reader.Message("pieces");
                string piece = ""; float score = 0; var type = PieceType.Normal;
                while (p.Next(out int f, out int w))
                {
                    if (f == 1 && w == 2) piece = Encoding.UTF8.GetString(p.Bytes());
                    else if (f == 2 && w == 5) score = p.Fixed32();
                    else if (f == 3 && w == 0) type = (PieceType)p.Varint();
                    else p.Skip(w);
                }
                switch (type)
                {
                    case PieceType.Normal: _pieces.TryAdd(piece, (id, score)); break;
                    case PieceType.UserDefined: _userDefined.TryAdd(piece, id); _maxUserDefinedLength = Math.Max(_maxUserDefinedLength, piece.Length); break;
                    case PieceType.Byte:
                        if (piece.Length != 6 || !piece.StartsWith("<0x", StringComparison.Ordinal) || !byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                            throw new InvalidDataException($"Tokenizer '{path}': byte piece {id} is '{piece}', expected <0xXX>.");
                        _byteIds[b] = id;
                        hasBytes = true;
                        break;
                    case PieceType.Unused:
                        throw new NotSupportedException($"Tokenizer '{path}': piece {id} '{piece}' is of type UNUSED, which is not supported.");
                }
                id++;
            }
            else if (field == 2 && wire == 2)
            {
                var t = reader.Message("trainer_spec");
                while (t.Next(out int f, out int w))
                {
                    if (w != 0) { t.Skip(w); continue; }
                    long v = (long)t.Varint();
                    switch (f)
                    {
                        case 3: modelType = (int)v; break;
                        case 24 when v != 0: throw new NotSupportedException($"Tokenizer '{path}': trainer_spec.treat_whitespace_as_suffix is not supported.");
                        case 35: _byteFallback = v != 0; break;
                        case 40: UnknownId = (int)v; break;
                        case 41: BosId = (int)v; break;
                        case 42: EosId = (int)v; break;
                    }
                }
            }
            else if (field == 3 && wire == 2)
            {
                var n = reader.Message("normalizer_spec");
                while (n.Next(out int f, out int w))
                {
                    if (f == 1 && w == 2) n.Bytes(); // the rule's name; the character map below is what matters
                    else if (f == 2 && w == 2)
                    {
                        if (n.Bytes().Length > 0)
                            throw new NotSupportedException($"Tokenizer '{path}': normalizer_spec.precompiled_charsmap is set (a normalization other than identity), which is not supported.");
                    }
                    else if (f == 3 && w == 0) _addDummyPrefix = n.Varint() != 0;
                    else if (f == 4 && w == 0) _removeExtraWhitespaces = n.Varint() != 0;
                    else if (f == 5 && w == 0) _escapeWhitespaces = n.Varint() != 0;
                    else n.Skip(w);
                }
            }
            else reader.Skip(wire);
        }
        if (modelType != 2)
            throw new NotSupportedException($"Tokenizer '{path}': trainer_spec.model_type is {modelType}; only BPE (2) SentencePiece models are supported.");
        if (_pieces.Count == 0) throw new InvalidDataException($"Tokenizer '{path}' holds no pieces.");
        if (_byteFallback && !hasBytes) throw new InvalidDataException($"Tokenizer '{path}': byte_fallback is set but there are no <0xXX> pieces.");
        VocabularySize = id;
        foreach (var (name, value) in new[] { ("unk_id", UnknownId), ("bos_id", BosId), ("eos_id", EosId) })
            if (value < 0 || value >= id) throw new InvalidDataException($"Tokenizer '{path}': trainer_spec.{name} is {value}, outside the {id} pieces.");
        _lookup = _pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefinedLookup = _userDefined.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Reads a SentencePiece model file.</summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed model (the message names it).</exception>
    /// <exception cref="NotSupportedException">The model is of a kind not supported (the message names the file and field).</exception>
    public static SentencePieceBpe Load(string path) => new(File.ReadAllBytes(path), path);

    /// <summary>The ids of <paramref name="text"/>, without BOS or EOS.</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        string normalized = Normalize(text);
        if (normalized.Length == 0) return ids;

        // Symbols as a linked list over the normalized text: [start, start + length), frozen ones never merge.
        int count = 0;
        var start = new int[normalized.Length];
        var length = new int[normalized.Length];
        var frozen = new bool[normalized.Length];
        for (int i = 0; i < normalized.Length; count++)
        {
            int taken = UserDefinedAt(normalized, i);
            frozen[count] = taken > 0;
            if (taken == 0) taken = char.IsHighSurrogate(normalized[i]) && i + 1 < normalized.Length && char.IsLowSurrogate(normalized[i + 1]) ? 2 : 1;
            (start[count], length[count]) = (i, taken);
            i += taken;
        }
        var prev = new int[count];
        var next = new int[count];
        for (int i = 0; i < count; i++) (prev[i], next[i]) = (i - 1, i + 1 < count ? i + 1 : -1);

        // Highest score first; among equal scores the leftmost pair.
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(PairOrder.Instance);
        void Consider(int left, int right)
        {
            if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
            int merged = length[left] + length[right];
            if (_lookup.TryGetValue(normalized.AsSpan(start[left], merged), out var piece))
                agenda.Enqueue((left, right, merged), (piece.Score, left));
        }
        for (int i = 0; i + 1 < count; i++) Consider(i, i + 1);

        while (agenda.TryDequeue(out var pair, out _))
        {
            // Stale: one side already merged into something else.
            if (length[pair.Left] == 0 || length[pair.Right] == 0 || length[pair.Left] + length[pair.Right] != pair.Length) continue;
            length[pair.Left] = pair.Length;
            length[pair.Right] = 0;
            next[pair.Left] = next[pair.Right];
            if (next[pair.Right] >= 0) prev[next[pair.Right]] = pair.Left;
            Consider(prev[pair.Left], pair.Left);
            Consider(pair.Left, next[pair.Left]);
        }

        for (int s = 0; s >= 0; s = next[s])
        {
            var piece = normalized.AsSpan(start[s], length[s]);
            if (frozen[s]) ids.Add(_userDefinedLookup[piece]);
            else if (_lookup.TryGetValue(piece, out var p)) ids.Add(p.Id);
            else if (_byteFallback)
            {
                foreach (byte b in Encoding.UTF8.GetBytes(piece.ToString())) ids.Add(_byteIds[b] >= 0 ? _byteIds[b] : UnknownId);
            }
            else ids.Add(UnknownId);
        }
        return ids;
    }

    private string Normalize(string text)
    {
        if (_removeExtraWhitespaces)
        {
            // Leading, trailing and repeated spaces go.
            var sb = new StringBuilder(text.Length);
            foreach (char c in text.Trim(' '))
                if (c != ' ' || sb.Length == 0 || sb[^1] != ' ') sb.Append(c);
            text = sb.ToString();
        }
        if (text.Length == 0) return text;
        if (_addDummyPrefix) text = " " + text;
        return _escapeWhitespaces ? text.Replace(' ', Space) : text;
    }

    private int UserDefinedAt(string text, int i)
    {
        for (int len = Math.Min(_maxUserDefinedLength, text.Length - i); len > 0; len--)
            if (_userDefinedLookup.ContainsKey(text.AsSpan(i, len))) return len;
        return 0;
    }

    private sealed class PairOrder : IComparer<(float Score, int Left)>
    {
        public static readonly PairOrder Instance = new();
        public int Compare((float Score, int Left) a, (float Score, int Left) b) =>
            a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left);
    }

    /// <summary>Protocol-buffer wire format, the few shapes sentencepiece_model.proto uses.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data, string path, string where)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _at;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_at >= _data.Length) return false;
            ulong tag = Varint();
            (field, wire) = ((int)(tag >> 3), (int)(tag & 7));
            return true;
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_at >= _data.Length) throw Truncated();
                byte b = _data[_at++];
                v |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return v;
            }
            throw new InvalidDataException($"Tokenizer '{path}': a malformed number in {where}.");
        }

        public float Fixed32()
        {
            if (_at + 4 > _data.Length) throw Truncated();
            float v = BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(_at, 4));
            _at += 4;
            return v;
        }

        public ReadOnlySpan<byte> Bytes()
        {
            ulong n = Varint();
            if (n > (ulong)(_data.Length - _at)) throw Truncated();
            var s = _data.Slice(_at, (int)n);
            _at += (int)n;
            return s;
        }

        public Reader Message(string name) => new(Bytes(), path, where.Length == 0 ? name : where + "." + name);

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: if ((_at += 8) > _data.Length) throw Truncated(); break;
                case 2: Bytes(); break;
                case 5: if ((_at += 4) > _data.Length) throw Truncated(); break;
                default: throw new InvalidDataException($"Tokenizer '{path}' is not a SentencePiece model: wire type {wire} in {(where.Length == 0 ? "the model" : where)}.");
            }
        }

        private readonly InvalidDataException Truncated() =>
            new($"Tokenizer '{path}' is not a SentencePiece model: it ends inside {(where.Length == 0 ? "the model" : where)}.");
    }
}
