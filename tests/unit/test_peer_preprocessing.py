"""bench/peers/common.py's copy of the preprocessing still computes exactly what the service does.

The peers run from a venv of their own and cannot import the service, so common.py repeats its decode, crop,
resize and normalisation (bench/peers/README.md). The benchmark compares serving frameworks only if every peer
feeds the model the same tensor: the copy is meant to be bit for bit, so equality here is exact.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import COMMITTED_IMAGES, DEEPLAB, IMAGES, REPO, STORE, TV_FP32, V1, encode

from service.preprocess import crop_box, decode, normalize, prepare
from service.store import parse_variant

PEER_COMMON = REPO / "bench" / "peers" / "common.py"
# One variant per crop convention in the store: TF-slim's central fraction, torchvision's resize and centre
# crop, DeepLab's whole image, and MediaPipe's letterbox (face detectors) and stretch (selfie segmenter).
VARIANTS = [V1, TV_FP32, DEEPLAB, "blazeface_short_range", "selfie_segmentation"]
TEST_IMAGES = sorted(COMMITTED_IMAGES)
NO_PIXEL_LIMIT = 10**9


@cache
def peer_common() -> ModuleType:
    """common.py loaded by file path: bench/peers is no package, and the peers import it as a top-level module."""
    spec = importlib.util.spec_from_file_location("peer_common", PEER_COMMON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def manifest(variant: str) -> dict[str, Any]:
    """The manifest as the peers read it: plain JSON, not the service's parsed Variant."""
    return json.loads((STORE / variant / "manifest.json").read_text())


def assert_same_tensor(peer: np.ndarray, service: np.ndarray) -> None:
    assert peer.dtype == service.dtype == np.float32
    assert peer.shape == service.shape
    np.testing.assert_array_equal(peer, service)


def service_tensor(data: bytes, variant: str) -> np.ndarray:
    parsed = parse_variant(STORE / variant)
    return prepare(data, parsed.preprocess, parsed.native_resolution, NO_PIXEL_LIMIT).tensor


def test_every_variant_family_is_covered() -> None:
    crops = {manifest(variant)["preprocess"]["crop"] for variant in VARIANTS}
    in_store = {json.loads(path.read_text())["preprocess"]["crop"] for path in STORE.glob("*/manifest.json")}
    assert crops == in_store
    assert len(TEST_IMAGES) >= 10


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TEST_IMAGES)
def test_peer_preprocess_equals_service_prepare(variant: str, name: str) -> None:
    data = (IMAGES / name).read_bytes()
    assert_same_tensor(peer_common().preprocess(data, manifest(variant)), service_tensor(data, variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_big_jpeg_is_drafted_alike(variant: str) -> None:
    """A big JPEG is decoded at a reduced DCT scale (1/2 to 1/8): both must pick the same one."""
    big = Image.open(IMAGES / "parrot.jpg").convert("RGB").resize((4096, 3072))
    data = encode(big, "JPEG", quality=85)
    parsed = parse_variant(STORE / variant)
    drafted, _ = decode(data, parsed.preprocess, parsed.native_resolution, NO_PIXEL_LIMIT)
    assert drafted.width < big.width, "the image is too small to be drafted: the test proves nothing"
    assert_same_tensor(peer_common().preprocess(data, manifest(variant)), service_tensor(data, variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_exif_rotated_jpeg_is_turned_upright_alike(variant: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees: the upright image is portrait
    stored = Image.open(IMAGES / "owl.jpg").convert("RGB").transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert_same_tensor(peer_common().preprocess(data, manifest(variant)), service_tensor(data, variant))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(512, 343), (343, 512), (1280, 720), (1, 1), (7, 3000), (3000, 7), (224, 224)])
def test_peer_crop_box_equals_service(variant: str, size: tuple[int, int]) -> None:
    parsed = parse_variant(STORE / variant)
    for resolution in parsed.resolutions:
        peer = peer_common().crop_box(size, manifest(variant)["preprocess"], resolution)
        assert peer == crop_box(size, parsed.preprocess, resolution), resolution


@pytest.mark.parametrize("variant", VARIANTS)
def test_peer_normalize_equals_service_on_every_byte_value(variant: str) -> None:
    # Every uint8 value in every channel, in a 16 x 16 image.
    pixels = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * 3, axis=-1)
    pixels[..., 1] = pixels[..., 1][::-1]
    peer = peer_common().normalize(pixels, manifest(variant)["preprocess"])
    assert_same_tensor(peer, normalize(Image.fromarray(pixels), parse_variant(STORE / variant).preprocess))
