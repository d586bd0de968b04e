"""Whether an encoded image may be decoded at all: its format, its structure and its declared size.

The core runs these checks before an image may take a place in a queue, so that what they refuse
costs no more than reading its bytes once. Some small files cost a decoder seconds: a progressive JPEG with thousands of
scans (each scan re-reads the whole coefficient buffer), a PNG of a million empty chunks, a TIFF whose
strips or tiles number in the millions (one decoder call each), a BMP in RLE (decoded in Python, one
pixel run at a time). Honest images stay far below each limit; the structure is read from the bytes
before Pillow parses anything.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# Importing the whitelisted plugins registers them; Image.init() would load every format Pillow knows.
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin  # noqa: F401  isort: skip
from PIL import PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401  isort: skip

from .errors import ServiceError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Naming the format of a refused body needs only its header; every Pillow plugin trying a whole large body
# to find none that fits took seconds.
_SNIFF_BYTES = 64 * 1024

MAX_JPEG_SCANS = 64
MAX_PNG_CHUNKS = 10_000
MAX_TIFF_SEGMENTS = 20_000
MAX_TIFF_TAGS = 1_000
_TIFF_SEGMENT_TAGS = frozenset({273, 279, 324, 325})  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BMP_RLE = {1: "RLE8", 2: "RLE4"}


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Check the structure, identify the format and check the declared size, before any pixel is decoded."""
    if not data:
        raise ServiceError(400, "the image is empty (0 bytes)", code="empty_image")
    check_structure(data)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fired first (far beyond any sane limit); its message states the pixel count.
        raise ServiceError(
            413, f"image is over the limit of {max_pixels} pixels ({exc})", code="image_too_large"
        ) from exc
    except Exception as exc:
        raise _unidentified(data) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ServiceError(400, f"image declares an empty size {width}x{height}", code="bad_image")
    if width * height > max_pixels:
        raise ServiceError(
            413,
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
            code="image_too_large",
        )
    return image


def _unidentified(data: bytes) -> ServiceError:
    try:
        with Image.open(io.BytesIO(data[:_SNIFF_BYTES])) as other:
            fmt = other.format
    except Exception:
        fmt = None
    if fmt:
        return ServiceError(
            415,
            f"image format {fmt} is not supported; send one of {', '.join(ALLOWED_FORMATS)}",
            code="unsupported_image_format",
        )
    return ServiceError(400, "the body is not a decodable image", code="bad_image")


def check_structure(data: bytes) -> None:
    """Raise the ServiceError that refuses `data`, or return when nothing in it is known to decode slowly."""
    if data[:3] == b"\xff\xd8\xff":
        _check_jpeg(data)
    elif data[:8] == _PNG_SIGNATURE:
        _check_png(data)
    elif data[:2] == b"BM":
        _check_bmp(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        _check_tiff(data)


def _too_costly(what: str) -> ServiceError:
    return ServiceError(400, f"image refused: {what}", code="image_too_costly")


def _check_jpeg(data: bytes) -> None:
    # Entropy-coded data stuffs every 0xFF with 0x00, so FF DA occurs only as a start-of-scan marker.
    # numpy finds the pairs several times as fast as bytes.count, on the event loop (docs/reliability.md).
    raw = np.frombuffer(data, dtype=np.uint8)
    candidates = np.flatnonzero(raw[1:] == 0xDA)
    scans = int(np.count_nonzero(raw[candidates] == 0xFF))
    if scans > MAX_JPEG_SCANS:
        raise _too_costly(f"the JPEG has {scans} scans, over the limit of {MAX_JPEG_SCANS}")


def _check_png(data: bytes) -> None:
    offset, chunks = len(_PNG_SIGNATURE), 0
    while offset + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_costly(f"the PNG has more than {MAX_PNG_CHUNKS} chunks")
        if data[offset + 4 : offset + 8] == b"IEND":
            return
        offset += 12 + length


def _check_bmp(data: bytes) -> None:
    if len(data) < 34 or struct.unpack_from("<I", data, 14)[0] < 40:
        return  # an OS/2 header, which has no compression field
    compression = struct.unpack_from("<I", data, 30)[0]
    if compression in _BMP_RLE:
        raise ServiceError(
            415,
            f"{_BMP_RLE[compression]}-compressed BMP is not supported; send an uncompressed BMP or another format",
            code="unsupported_image_format",
        )


def _check_tiff(data: bytes) -> None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # Classic TIFF: 4-byte offsets, 2-byte entry count, 12-byte entries; BigTIFF: 8, 8 and 20.
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    try:
        (ifd,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
        (entries,) = struct.unpack_from(order + count_format, data, ifd)
        if entries > MAX_TIFF_TAGS:
            raise _too_costly(f"the TIFF's first directory has {entries} tags, over the limit of {MAX_TIFF_TAGS}")
        first = ifd + struct.calcsize(count_format)
        for index in range(entries):
            tag, _, count = struct.unpack_from(order + "HH" + offset_format, data, first + index * entry_size)
            if tag in _TIFF_SEGMENT_TAGS and count > MAX_TIFF_SEGMENTS:
                raise _too_costly(f"the TIFF has {count} strips or tiles, over the limit of {MAX_TIFF_SEGMENTS}")
    except struct.error:
        return  # a truncated header: Pillow's parser says what is wrong with it
