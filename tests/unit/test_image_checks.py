"""The structural checks refuse images built to decode slowly, from their header bytes, and pass honest ones."""

from __future__ import annotations

import time

import pytest
from hostile_images import bmp_rle8, jpeg_with_scans, png_with_chunks, tiff_with_strips
from PIL import Image
from support import COMMITTED_IMAGES, IMAGES, encode

from service import image_checks
from service.errors import ServiceError
from service.image_checks import check_structure


def _refusal(data: bytes) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        check_structure(data)
    return caught.value


@pytest.mark.parametrize("path", [IMAGES / name for name in COMMITTED_IMAGES], ids=lambda p: p.name)
def test_every_test_image_passes(path: object) -> None:
    check_structure(path.read_bytes())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("BMP", {}),
        ("TIFF", {"compression": "packbits"}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
        ("WEBP", {}),
    ],
)
def test_what_encoders_write_passes(fmt: str, options: dict[str, object]) -> None:
    check_structure(encode(Image.open(IMAGES / "parrot.jpg"), fmt, **options))


def test_a_jpeg_with_too_many_scans_is_refused() -> None:
    check_structure(jpeg_with_scans(image_checks.MAX_JPEG_SCANS))
    error = _refusal(jpeg_with_scans(image_checks.MAX_JPEG_SCANS + 1))
    assert error.status == 400 and error.code == "image_too_costly" and "scans" in error.message


def test_a_png_with_too_many_chunks_is_refused_without_walking_them_all() -> None:
    check_structure(png_with_chunks(image_checks.MAX_PNG_CHUNKS - 10))
    huge = png_with_chunks(1_000_000)
    started = time.perf_counter()
    error = _refusal(huge)
    assert time.perf_counter() - started < 0.5
    assert error.status == 400 and "chunks" in error.message


def test_an_rle_bmp_is_unsupported() -> None:
    error = _refusal(bmp_rle8(4, 6320))
    assert error.status == 415 and error.code == "unsupported_image_format" and "RLE8" in error.message


def test_a_tiff_with_too_many_strips_is_refused() -> None:
    check_structure(tiff_with_strips(image_checks.MAX_TIFF_SEGMENTS))
    error = _refusal(tiff_with_strips(image_checks.MAX_TIFF_SEGMENTS + 1))
    assert error.status == 400 and "strips" in error.message


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00\x00", b"BM\x00", b"II*\x00\xff\xff\xff\x7f", b"MM\x00+\x00\x08"],
    ids=["jpeg", "png", "bmp", "tiff", "bigtiff"],
)
def test_truncated_headers_are_left_to_the_decoder(data: bytes) -> None:
    check_structure(data)
