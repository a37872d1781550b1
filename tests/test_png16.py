"""febm.png16: 16-bit PNGs with colour or alpha read at 16 bits (PIL reads 8) and written, any filter, interlaced."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from febm.png16 import COLOUR_TYPES, SIGNATURE, png16_bytes, read_png16

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def filtered_rows(a: np.ndarray) -> bytes:
    """Rows of (H, W, C) uint16 with the five PNG filters in turn (a reference encoder, one row at a time)."""
    raw = a.astype(">u2").reshape(a.shape[0], -1).view(np.uint8).astype(np.int32)
    bpp, out, prev = 2 * a.shape[2], [], np.zeros(raw.shape[1], np.int32)
    for i, row in enumerate(raw):
        left, up_left = np.r_[np.zeros(bpp, np.int32), row[:-bpp]], np.r_[np.zeros(bpp, np.int32), prev[:-bpp]]
        p = left + prev - up_left
        pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        kind = i % 5
        predicted = [0 * row, left, prev, (left + prev) // 2, paeth][kind]
        out.append(bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes())
        prev = row
    return b"".join(out)


def reference_png(a: np.ndarray, interlace: bool) -> bytes:
    if interlace:
        data = b"".join(filtered_rows(a[y::dy, x::dx]) for x, y, dx, dy in ADAM7 if a[y::dy, x::dx].size)
    else:
        data = filtered_rows(a)
    height, width, channels = a.shape
    header = struct.pack(">IIBBBBB", width, height, 16, COLOUR_TYPES[channels], 0, 0, int(interlace))
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_every_filter_and_adam7_decode_exactly(tmp_path, channels, interlace):
    a = np.random.default_rng(channels).integers(0, 65536, (13, 17, channels), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(reference_png(a, interlace))
    assert np.array_equal(read_png16(tmp_path / "a.png"), a)
    with Image.open(tmp_path / "a.png") as image:  # what PIL alone makes of it: the top 8 bits
        assert np.array_equal(np.asarray(image)[..., -1], (a[..., -1] >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_written_pngs_round_trip(tmp_path, channels):
    a = np.random.default_rng(0).integers(0, 65536, (300, 7, channels), dtype=np.uint16)  # over a block of rows
    (tmp_path / "w.png").write_bytes(png16_bytes(a))
    if channels == 1:  # PIL reads 16-bit grey at full depth
        assert read_png16(tmp_path / "w.png") is None
        assert np.array_equal(np.asarray(Image.open(tmp_path / "w.png")).astype(np.uint16), a[..., 0])
    else:
        assert np.array_equal(read_png16(tmp_path / "w.png"), a)


def test_other_files_are_left_to_pil(tmp_path):
    Image.new("RGB", (5, 4)).save(tmp_path / "eight.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "x.jpg")
    (tmp_path / "short.png").write_bytes(SIGNATURE + b"\0\0")
    assert all(read_png16(tmp_path / name) is None for name in ("eight.png", "x.jpg", "short.png"))
    with pytest.raises(ValueError, match="uint16"):
        png16_bytes(np.zeros((4, 5, 3), np.uint8))
