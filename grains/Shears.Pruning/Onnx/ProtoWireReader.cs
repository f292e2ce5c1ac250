namespace Shears.Pruning.Onnx;

/// <summary>The four protobuf wire types ONNX files use (groups, 3 and 4, are refused).</summary>
internal enum WireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    Fixed32 = 5,
}

/// <summary>The bytes are not valid protobuf; <see cref="Offset"/> is the absolute file offset at fault.</summary>
internal sealed class ProtoWireException(long offset, string problem) : Exception($"{problem} (at byte {offset})")
{
    public long Offset { get; } = offset;

    public string Problem { get; } = problem;
}

/// <summary>
/// Reads the protobuf wire format from a seekable stream through a small buffer, keeping the absolute
/// position of every byte, so that large fields can be located and skipped without being read.
/// Every read takes the end of the enclosing message and refuses to run past it.
/// </summary>
internal sealed class ProtoWireReader : IDisposable
{
    private const int BufferSize = 64 * 1024;

    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly byte[] _buffer = new byte[BufferSize];
    private long _bufferStart; // absolute offset of _buffer[0]
    private int _bufferCount;
    private int _bufferPos;

    public ProtoWireReader(Stream stream, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanSeek || !stream.CanRead)
        {
            throw new ArgumentException("The protobuf reader needs a readable, seekable stream.", nameof(stream));
        }
        _stream = stream;
        _leaveOpen = leaveOpen;
        Length = stream.Length;
        _bufferStart = stream.Position;
    }

    /// <summary>Length of the whole input: the end of the top-level message.</summary>
    public long Length { get; }

    /// <summary>Absolute offset of the next byte to be read.</summary>
    public long Position => _bufferStart + _bufferPos;

    /// <summary>Reads the next field key, or returns false when <paramref name="end"/> is reached.</summary>
    public bool TryReadTag(long end, out int fieldNumber, out WireType wireType)
    {
        if (Position >= end)
        {
            fieldNumber = 0;
            wireType = default;
            return false;
        }
        var at = Position;
        var key = ReadVarint(end);
        var number = key >> 3;
        if (number == 0 || number > 536_870_911)
        {
            throw new ProtoWireException(at, $"invalid field number {number} in a field key");
        }
        var type = (int)(key & 7);
        if (type is not (0 or 1 or 2 or 5))
        {
            throw new ProtoWireException(at, type is 3 or 4
                ? $"field {number} uses the protobuf group wire type {type}, which ONNX never writes"
                : $"field {number} has the invalid wire type {type}");
        }
        fieldNumber = (int)number;
        wireType = (WireType)type;
        return true;
    }

    public ulong ReadVarint(long end)
    {
        var at = Position;
        ulong value = 0;
        for (var shift = 0; shift < 70; shift += 7)
        {
            if (Position >= end)
            {
                throw new ProtoWireException(at, Position >= Length
                    ? "truncated varint: the file ends inside it"
                    : "truncated varint: it runs past the end of its message");
            }
            var b = ReadByteUnchecked();
            if (shift == 63 && b > 1)
            {
                throw new ProtoWireException(at, "malformed varint: more than 64 bits");
            }
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
        throw new ProtoWireException(at, "malformed varint: longer than 10 bytes");
    }

    /// <summary>A varint that must fit a non-negative 64-bit integer (lengths, dims, enums).</summary>
    public long ReadInt64(long end) => unchecked((long)ReadVarint(end));

    public uint ReadFixed32(long end)
    {
        Span<byte> bytes = stackalloc byte[4];
        ReadExactly(bytes, end, "32-bit value");
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(bytes);
    }

    public ulong ReadFixed64(long end)
    {
        Span<byte> bytes = stackalloc byte[8];
        ReadExactly(bytes, end, "64-bit value");
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    /// <summary>
    /// Reads the length prefix of a length-delimited field and returns the absolute end of its payload,
    /// checked against <paramref name="end"/>.
    /// </summary>
    public long ReadLengthDelimitedEnd(long end, string what)
    {
        var at = Position;
        var length = ReadVarint(end);
        var start = Position;
        if (length > (ulong)(end - start))
        {
            throw new ProtoWireException(at, end >= Length
                ? $"truncated {what}: it declares {length} bytes but the file has {Length - start} left"
                : $"truncated {what}: it declares {length} bytes but its enclosing message has {end - start} left");
        }
        return start + (long)length;
    }

    public byte[] ReadBytes(long payloadEnd)
    {
        var count = payloadEnd - Position;
        if (count > Array.MaxLength)
        {
            throw new ProtoWireException(Position, $"a field of {count} bytes is too large to read into memory");
        }
        var bytes = new byte[count];
        ReadExactly(bytes, payloadEnd, "bytes");
        return bytes;
    }

    public string ReadString(long payloadEnd)
    {
        var at = Position;
        var bytes = ReadBytes(payloadEnd);
        try
        {
            return new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (System.Text.DecoderFallbackException)
        {
            throw new ProtoWireException(at, "a string field is not valid UTF-8");
        }
    }

    /// <summary>Skips a field's value of the given wire type without reading large payloads.</summary>
    public void SkipValue(WireType wireType, long end)
    {
        switch (wireType)
        {
            case WireType.Varint:
                ReadVarint(end);
                break;
            case WireType.Fixed64:
                SkipTo(CheckedEnd(8, end, "64-bit value"));
                break;
            case WireType.Fixed32:
                SkipTo(CheckedEnd(4, end, "32-bit value"));
                break;
            case WireType.LengthDelimited:
                SkipTo(ReadLengthDelimitedEnd(end, "length-delimited field"));
                break;
            default:
                throw new ProtoWireException(Position, $"invalid wire type {(int)wireType}");
        }
    }

    /// <summary>Moves to an absolute position at or after the current one; seeks when it is outside the buffer.</summary>
    public void SkipTo(long position)
    {
        if (position < Position || position > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(position), position, $"cannot skip from {Position} to {position}");
        }
        var inBuffer = position - _bufferStart;
        if (inBuffer <= _bufferCount)
        {
            _bufferPos = (int)inBuffer;
            return;
        }
        _bufferStart = position;
        _bufferCount = 0;
        _bufferPos = 0;
    }

    public void Dispose()
    {
        if (!_leaveOpen)
        {
            _stream.Dispose();
        }
    }

    private long CheckedEnd(long count, long end, string what)
    {
        if (count > end - Position)
        {
            throw new ProtoWireException(Position, end >= Length
                ? $"truncated {what}: the file ends inside it"
                : $"truncated {what}: it runs past the end of its message");
        }
        return Position + count;
    }

    private void ReadExactly(Span<byte> target, long end, string what)
    {
        CheckedEnd(target.Length, end, what);
        while (!target.IsEmpty)
        {
            if (_bufferPos == _bufferCount)
            {
                Fill();
            }
            var n = Math.Min(target.Length, _bufferCount - _bufferPos);
            _buffer.AsSpan(_bufferPos, n).CopyTo(target);
            _bufferPos += n;
            target = target[n..];
        }
    }

    private byte ReadByteUnchecked()
    {
        if (_bufferPos == _bufferCount)
        {
            Fill();
        }
        return _buffer[_bufferPos++];
    }

    /// <summary>Refills the buffer from the current position; the caller has checked that bytes remain.</summary>
    private void Fill()
    {
        _bufferStart += _bufferPos;
        _bufferPos = 0;
        _bufferCount = 0;
        if (_stream.Position != _bufferStart)
        {
            _stream.Position = _bufferStart;
        }
        var want = (int)Math.Min(_buffer.Length, Length - _bufferStart);
        while (_bufferCount < want)
        {
            var n = _stream.Read(_buffer, _bufferCount, want - _bufferCount);
            if (n == 0)
            {
                throw new ProtoWireException(_bufferStart + _bufferCount, "the file ended early: it is shorter than when it was opened");
            }
            _bufferCount += n;
        }
    }
}
