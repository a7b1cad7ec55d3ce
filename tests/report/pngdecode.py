"""A PNG reader for tests, written from the PNG specification (RFC 2083) independently of the
encoder in graphnet.report.images: chunk lengths and CRCs are checked, the rows are unfiltered
for all five filter types, and grey, grey+alpha, RGB and RGBA 8-bit images are returned as
(H, W, channels) uint8 arrays."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

__all__ = ["decode_png", "decode_data_uri"]

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, idat, header = 8, b"", None
    kinds = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"CRC of chunk {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND", kinds
    w, h, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in _CHANNELS, header
    ch = _CHANNELS[colour]
    raw = zlib.decompress(idat)
    stride = w * ch
    assert len(raw) == h * (stride + 1), "one filter byte plus one row per line"
    out = np.zeros((h, stride), np.int64)
    prev = [0] * stride
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = list(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
            line[x] = (line[x] + pred) & 0xFF
        out[y] = line
        prev = line
    return out.astype(np.uint8).reshape(h, w, ch)


def decode_data_uri(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    return decode_png(base64.b64decode(uri[len(prefix) :]))
