"""Unit tests of decoding and preprocessing against the manifests' conventions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support import IMAGES, STORE, TV_FP32, V1, encode

from model_store.build.reference_preprocess import torchvision_reference
from service.errors import ServiceError
from service.preprocess import crop_box, decode, decoded_pixels, prepare, to_rgb
from service.store import parse_variant

BIG_LIMIT = 10**9


@pytest.fixture(scope="module")
def tv_spec():
    return parse_variant(STORE / TV_FP32).preprocess


@pytest.fixture(scope="module")
def slim_spec():
    return parse_variant(STORE / V1).preprocess


@pytest.mark.parametrize(
    "name", ["cat.png", "grace_hopper.png", "bird.png", "hot_dog.jpg", "parrot.jpg", "cat_720p.jpg"]
)
@pytest.mark.parametrize("size", [224, 160])
def test_torchvision_preprocessing_matches_reference(tv_spec, name: str, size: int) -> None:
    """One resize with a crop box equals Resize + CenterCrop up to Pillow's 1-LSB rounding."""
    ours = prepare((IMAGES / name).read_bytes(), tv_spec, size, BIG_LIMIT).tensor
    reference = torchvision_reference(IMAGES / name, size)
    assert ours.shape == reference.shape == (3, size, size)
    assert ours.dtype == np.float32
    one_lsb = 1.0 / 57.12 + 1e-4
    assert np.abs(ours - reference).max() <= one_lsb
    assert np.abs(ours - reference).mean() < 0.01


def test_torchvision_crop_box_geometry(tv_spec) -> None:
    # 512x600 portrait: shorter side 256 -> 256x300, centre crop top = round(38.0) = 38 rows.
    left, top, right, bottom = crop_box((512, 600), tv_spec, 224)
    assert (left, right) == pytest.approx((32.0, 480.0))
    assert (top, bottom) == pytest.approx((38 * 2.0, 262 * 2.0))


def test_tf_central_crop_geometry(slim_spec) -> None:
    # tf.image.central_crop(0.875): offset = 16, start = int(h / 16).
    assert crop_box((512, 384), slim_spec, 224) == (32, 24, 480, 360)
    assert crop_box((100, 50), slim_spec, 224) == (6, 3, 94, 47)


def test_tf_scaling_is_minus_one_to_one(slim_spec) -> None:
    data = encode(Image.new("RGB", (300, 300), (0, 255, 128)), "PNG")
    tensor = prepare(data, slim_spec, 128, BIG_LIMIT).tensor
    assert tensor.shape == (3, 128, 128)
    np.testing.assert_allclose(tensor[:, 64, 64], [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)


def test_draft_mode_for_big_jpegs(tv_spec) -> None:
    big = encode(Image.open(IMAGES / "parrot.jpg").convert("RGB").resize((4096, 3072)), "JPEG", quality=85)
    image, original = decode(big, tv_spec, 224, BIG_LIMIT)
    assert original == (4096, 3072)
    # Needs 256 * 2 on the shorter side: 1/4 scale keeps 768 rows.
    assert image.size == (1024, 768)
    small = encode(Image.open(IMAGES / "parrot.jpg").convert("RGB"), "JPEG")
    assert decode(small, tv_spec, 224, BIG_LIMIT)[0].size == (512, 929)


def test_pixel_limit_checked_before_decoding(tv_spec) -> None:
    data = encode(Image.new("RGB", (2000, 2000)), "PNG")
    with pytest.raises(ServiceError) as caught:
        decode(data, tv_spec, 224, max_pixels=1_000_000)
    assert caught.value.status == 413


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "LA", "CMYK", "YCbCr", "I", "F", "I;16"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    source = Image.open(IMAGES / "cat.png").convert("RGB").resize((64, 48))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(source.convert("L")).astype(np.uint16) * 257)
    elif mode in ("I", "F"):
        image = source.convert("L").convert(mode)
    else:
        image = source.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (64, 48)


def test_16_bit_scaling() -> None:
    wide = Image.fromarray(np.array([[0, 257 * 10, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 10, 255]


def test_truncated_and_garbage(tv_spec) -> None:
    data = (IMAGES / "hot_dog.jpg").read_bytes()
    for bad in (data[:2000], b"\x89PNG\r\n\x1a\n" + b"\0" * 50, b"GIF89a" + b"\xff" * 20):
        with pytest.raises(ServiceError) as caught:
            prepare(bad, tv_spec, 224, BIG_LIMIT)
        assert caught.value.status == 400


def test_exif_rotated_size_is_upright(tv_spec) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(Image.new("RGB", (300, 200), (10, 20, 30)), "JPEG", exif=exif.tobytes())
    image, original = decode(data, tv_spec, 224, BIG_LIMIT)
    assert original == (200, 300) and image.size == (200, 300)


def test_animated_gif_uses_first_frame(tv_spec) -> None:
    frames = [Image.new("RGB", (64, 64), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image, _ = decode(buffer.getvalue(), tv_spec, 224, BIG_LIMIT)
    assert image.getpixel((32, 32))[0] > 200


@pytest.mark.parametrize("size", [(6000, 6000), (4000, 3000), (1200, 300), (640, 480), (100, 90)])
@pytest.mark.parametrize("model", [V1, TV_FP32, "deeplabv3_mnv2_pascal"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoded_pixels_predicts_what_decoding_yields(size: tuple[int, int], model: str, fmt: str) -> None:
    variant = parse_variant(STORE / model)
    data = encode(Image.new("RGB", size, (120, 40, 200)), fmt)
    predicted = decoded_pixels(Image.open(io.BytesIO(data)), variant.preprocess, variant.native_resolution)
    rgb, _ = decode(data, variant.preprocess, variant.native_resolution, 10**9)
    assert predicted == rgb.size[0] * rgb.size[1]
