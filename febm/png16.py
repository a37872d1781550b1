"""16-bit PNGs with colour or alpha, which PIL decodes to 8 bits and cannot write: read and written here.

    a = read_png16("scan.png")            # (H, W, C) uint16, or None for a file PIL reads right
    data = png16_bytes(a)                 # a 16-bit PNG: grey, grey + alpha, RGB or RGBA

PIL reads 16-bit grey PNGs at full depth ("I;16"), but cuts 16-bit grey + alpha, RGB and RGBA to their top 8 bits.
:func:`read_png16` hands such a file's own zlib stream to PIL's PNG decoder (which undoes the row filters and the
Adam7 interlacing) in modes that keep every byte, so nothing is lost and nothing is decoded in Python.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: grey, grey + alpha, RGB, RGBA
DEEP = (b"\x10\x02", b"\x10\x04", b"\x10\x06")  # IHDR bit depth 16 and colour type RGB, grey + alpha, RGBA
ROWS_PER_BLOCK = 256  # rows filtered at once when writing: bounds the temporary arrays of a large photo


def _chunks(data: bytes) -> dict[bytes, list[bytes]]:
    """The bodies of a PNG's chunks by type, in file order (IDAT: several)."""
    chunks: dict[bytes, list[bytes]] = {}
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.setdefault(kind, []).append(data[pos + 8:pos + 8 + length])
        pos += 12 + length  # length, type, body, CRC
        if kind == b"IEND":
            break
    return chunks


def read_png16(path: str | os.PathLike) -> np.ndarray | None:
    """(H, W, C) uint16 of a 16-bit PNG of grey + alpha (C = 2), RGB (3) or RGBA (4), as stored (no EXIF
    orientation applied); an RGB file with a tRNS colour key gets an alpha channel (0 on the key, 65535 elsewhere).
    None for any other file: PIL reads those at their full depth."""
    with open(path, "rb") as f:
        head = f.read(len(SIGNATURE) + 25)  # the signature and the IHDR chunk, which PNG puts first
        if len(head) < 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR" or head[24:26] not in DEEP:
            return None
        chunks = _chunks(head + f.read())
    width, height, _, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    stream, size = b"".join(chunks.get(b"IDAT", [])), (width, height)
    if colour == 4:  # 4 bytes a pixel: decoded as 8-bit RGBA they are the grey and alpha samples' bytes
        a = np.asarray(Image.frombytes("RGBA", size, stream, "zip", "RGBA", interlace)).view(">u2")
    else:  # 6 or 8 bytes a pixel: the samples' high bytes (";16B"), then their low bytes (";16L" read big-endian)
        mode = "RGB" if colour == 2 else "RGBA"
        high, low = (np.asarray(Image.frombytes(mode, size, stream, "zip", f"{mode};16{end}", interlace),
                                dtype=np.uint16) for end in "BL")
        a = high << 8 | low
    a = a.astype(np.uint16)
    key = chunks.get(b"tRNS", [b""])[0]
    if colour == 2 and len(key) == 6:
        opaque = ~(a == np.frombuffer(key, ">u2")).all(axis=2)
        a = np.dstack([a, opaque.astype(np.uint16) * 65535])
    return a


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor, byte-wise."""
    a, b, c = (v.astype(np.int16) for v in (left, up, up_left))
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_bytes(a: np.ndarray) -> bytes:
    """A 16-bit PNG of ``a``, (H, W, C) uint16 with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); every row
    Paeth-filtered (what suits photos)."""
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in COLOUR_TYPES:
        raise ValueError(f"expected (H, W, C) uint16 with C in 1-4, got {a.shape} {a.dtype}")
    height, width, channels = a.shape
    raw = np.ascontiguousarray(a, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    bpp = 2 * channels  # bytes a pixel: the filter's distance to the left neighbour
    filtered = np.empty((height, raw.shape[1] + 1), np.uint8)
    filtered[:, 0] = 4  # Paeth
    for top in range(0, height, ROWS_PER_BLOCK):
        rows = raw[top:top + ROWS_PER_BLOCK]
        up = np.zeros_like(rows)
        up[1:] = rows[:-1]
        if top:
            up[0] = raw[top - 1]
        left, up_left = np.zeros_like(rows), np.zeros_like(rows)
        left[:, bpp:], up_left[:, bpp:] = rows[:, :-bpp], up[:, :-bpp]
        filtered[top:top + len(rows), 1:] = rows - _paeth(left, up, up_left)  # modulo 256
    header = struct.pack(">IIBBBBB", width, height, 16, COLOUR_TYPES[channels], 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered.tobytes()))
            + _chunk(b"IEND", b""))
