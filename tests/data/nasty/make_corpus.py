"""Write the nasty-image corpus beside this script, deterministically; `expected.json` says what each must get.

Run: python tests/data/nasty/make_corpus.py. The files are committed; rerunning rewrites the same bytes.
Every entry is small on disk: the bombs declare huge sizes in their headers, they do not hold the pixels.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "images" / "parrot.jpg"


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height 1-bit grey; the IDAT holds a few rows only."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _gif_bomb(width: int, height: int) -> bytes:
    """A GIF whose logical screen and frame both declare width x height, with a one-pixel LZW stream."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def build() -> dict[str, tuple[bytes, str, list[int]]]:
    """name -> (bytes, content type to send, the statuses the documented behaviour allows)."""
    parrot = Image.open(SOURCE).convert("RGB").resize((96, 72))
    jpeg, png, webp = _encode(parrot, "JPEG", quality=85), _encode(parrot, "PNG"), _encode(parrot, "WEBP")
    corrupt_jpeg = bytearray(jpeg)
    for i in range(len(corrupt_jpeg) // 2, len(corrupt_jpeg) // 2 + 64):
        corrupt_jpeg[i] = 0xFF if i % 2 else 0x00
    corrupt_png = bytearray(png)
    corrupt_png[40:48] = b"\xde\xad\xbe\xef" * 2  # inside IDAT: bad zlib stream and CRC
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green", "blue")]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    sixteen = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    ok, bad, big = [200], [400], [413]
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "image/jpeg", ok + bad),
        "truncated.png": (png[: len(png) // 3], "image/png", bad),
        "truncated.webp": (webp[: len(webp) // 3], "image/webp", bad),
        "corrupt.jpg": (bytes(corrupt_jpeg), "image/jpeg", ok + bad),
        "corrupt.png": (bytes(corrupt_png), "image/png", bad),
        "corrupt_header.webp": (webp[:12] + b"\x00" * 32 + webp[44:], "image/webp", bad),
        "bomb_png_100k.png": (_png_bomb(100_000, 100_000), "image/png", big),
        "bomb_png_65535.png": (_png_bomb(65_535, 65_535), "image/png", big),
        "bomb_gif_65535.gif": (_gif_bomb(65_535, 65_535), "image/gif", big),
        "tiny_1x1.png": (_encode(Image.new("RGB", (1, 1), "white"), "PNG"), "image/png", ok),
        "wide_20000x1.png": (_encode(Image.new("RGB", (20_000, 1), "gray"), "PNG"), "image/png", ok),
        "tall_1x20000.png": (_encode(Image.new("L", (1, 20_000), 128), "PNG"), "image/png", ok),
        "gray16.png": (_encode(sixteen, "PNG"), "image/png", ok),
        "cmyk.jpg": (_encode(parrot.convert("CMYK"), "JPEG"), "image/jpeg", ok),
        "animated.gif": (animated.getvalue(), "image/gif", ok),
        "png_named_jpg.jpg": (png, "image/jpeg", ok),
        "jpeg_as_octet_stream.bin": (jpeg, "application/octet-stream", ok),
        "jpeg_as_text.txt": (jpeg, "text/plain", [415]),
        "zero_bytes.jpg": (b"", "image/jpeg", bad),
        "text_as_png.png": (b"hello, this is not an image\n" * 4, "image/png", bad),
        "zero_size_gif.gif": (_gif_bomb(0, 0), "image/gif", bad),
        "svg_as_png.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>', "image/png", bad),
        "ico.png": (_encode(Image.new("RGB", (16, 16)), "ICO"), "image/png", [415]),
    }


def main() -> None:
    expected: dict[str, dict[str, Any]] = {}
    for name, (data, media, statuses) in build().items():
        (HERE / name).write_bytes(data)
        expected[name] = {"content_type": media, "statuses": statuses}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
