"""Small images built to cost a decoder far more than their size, and a PNG corrupted mid-stream.

Each is a real file of its format: Pillow parses its header, and (before the service's structural
checks) decoded it for seconds.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image
from support import image_bytes


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def jpeg_with_scans(scans: int, size: int = 64) -> bytes:
    """A progressive JPEG of size x size pixels whose last scan is repeated until the file has `scans` scans."""
    buffer = io.BytesIO()
    parrot = Image.open(io.BytesIO(image_bytes("parrot.jpg"))).resize((size, size))
    parrot.save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    last, end = data.rindex(b"\xff\xda"), len(data) - 2
    extra = scans - data.count(b"\xff\xda")
    return data[:end] + data[last:end] * max(0, extra) + data[end:]


def png_with_chunks(chunks: int) -> bytes:
    """A valid small PNG with `chunks` empty ancillary chunks between its header and its pixels."""
    data = image_bytes("cat.png")
    after_header = 8 + 12 + struct.unpack_from(">I", data, 8)[0]
    return data[:after_header] + _png_chunk(b"teXt", b"") * chunks + data[after_header:]


def bmp_rle8(width: int, height: int) -> bytes:
    """An RLE8 BMP whose every row is one pixel and an end-of-line code: tiny, and a row-by-row decode."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = b"\x01\x07\x00\x00" * height + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def tiff_with_strips(rows: int) -> bytes:
    """A one-pixel-wide TIFF with one strip per row."""
    buffer = io.BytesIO()
    Image.new("L", (1, rows), 128).save(buffer, "TIFF", compression="packbits", strip_size=1)
    return buffer.getvalue()


def corrupt_png() -> bytes:
    """cat.png with 60 bytes of its compressed pixels zeroed: Pillow's own load() calls it a broken stream."""
    data = image_bytes("cat.png")
    middle = len(data) // 2
    return data[:middle] + b"\0" * 60 + data[middle + 60 :]


def slow_png() -> bytes:
    """36 million pixels of one colour: 120 KB that pass every structural check and take about 0.4 s to decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 6000), (10, 200, 30)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()
