#!/usr/bin/env python3
# Counts the zeros of all-MiniLM-L6-v2's 36 encoder matrices (the fp32 [384, 384], [384, 1536] and [1536, 384]
# initializers, the pooler's left out) straight from an ONNX file, reading its protobuf with nothing but the standard
# library: ModelProto.graph (7) → GraphProto.initializer (5) → TensorProto dims (1), data_type (2), float_data (4),
# name (8), raw_data (9). Usage: count-zeros.py MODEL.onnx
import struct, sys

def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7F) << s; s += 7
        if c < 0x80: return v, i

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i); f, w = key >> 3, key & 7
        if w == 0: v, i = varint(b, i)
        elif w == 1: v = b[i:i + 8]; i += 8
        elif w == 5: v = b[i:i + 4]; i += 4
        elif w == 2: n, i = varint(b, i); v = b[i:i + n]; i += n
        else: raise ValueError(f"wire type {w}")
        yield f, w, v

model = open(sys.argv[1], 'rb').read()
graph = next(v for f, w, v in fields(model) if f == 7)
zeros = total = matrices = 0
names = []
for f, w, t in fields(graph):
    if f != 5: continue
    dims, dtype, raw, floats, name = [], None, None, None, ''
    for g, gw, v in fields(t):
        if g == 1:
            if gw == 0: dims.append(v)
            else:
                j = 0
                while j < len(v): d, j = varint(v, j); dims.append(d)
        elif g == 2: dtype = v
        elif g == 9: raw = v
        elif g == 4: floats = v
        elif g == 8: name = v.decode()
    if dtype != 1 or len(dims) != 2 or sorted(dims) not in ([384, 384], [384, 1536]) or 'pooler' in name: continue
    data = raw if raw is not None else floats
    values = struct.unpack(f'<{len(data) // 4}f', data)
    names.append(name); matrices += 1; total += len(values); zeros += sum(1 for x in values if x == 0.0)
print(f"{sys.argv[1]}: {matrices} encoder matrices, {zeros} of {total} weights zero ({zeros / total:.6f})")
