"""Image formats and colour modes over HTTP: every accepted format, every mode becomes the right RGB."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from support import IMAGES, MACAW, TV_FP32, V1, cosine, encode, top1


def embedding(client: httpx.Client, data: bytes, model: str = TV_FP32) -> np.ndarray:
    response = client.post(
        "/embed",
        params={"model": model, "normalize": "false"},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["results"][0]["embedding"], dtype=np.float32)


def classify(client: httpx.Client, data: bytes, content_type: str, model: str = V1) -> dict:
    response = client.post("/classify", params={"model": model}, content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def parrot() -> Image.Image:
    return Image.open(IMAGES / "parrot.jpg").convert("RGB")


@pytest.mark.parametrize(
    ("fmt", "content_type", "options"),
    [
        ("PNG", "image/png", {}),
        ("JPEG", "image/jpeg", {"quality": 95}),
        ("WEBP", "image/webp", {"quality": 95}),
        ("BMP", "image/bmp", {}),
        ("TIFF", "image/tiff", {}),
        ("GIF", "image/gif", {}),
    ],
)
def test_every_accepted_format(
    client: httpx.Client, parrot: Image.Image, fmt: str, content_type: str, options: dict
) -> None:
    assert top1(classify(client, encode(parrot, fmt, **options), content_type)) == MACAW


def test_exif_orientation_is_applied(client: httpx.Client, parrot: Image.Image) -> None:
    upright = embedding(client, encode(parrot, "PNG"))
    # Orientation 6: the stored pixels are the upright image turned 90 degrees counter-clockwise.
    stored = parrot.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_jpeg = encode(stored, "JPEG", quality=98, exif=exif.tobytes())
    plain_jpeg = encode(stored, "JPEG", quality=98)
    assert cosine(embedding(client, rotated_jpeg), upright) > 0.97
    assert cosine(embedding(client, plain_jpeg), upright) < cosine(embedding(client, rotated_jpeg), upright) - 0.05
    body = classify(client, rotated_jpeg, "image/jpeg", model=TV_FP32)
    assert top1(body) == MACAW


def test_exif_rotated_detection_box_uses_upright_size(client: httpx.Client) -> None:
    dog = Image.open(IMAGES / "dog_segmentation.png").convert("RGB").resize((200, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(dog.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    result = client.post("/detect", content=data, headers={"Content-Type": "image/jpeg"}).json()["results"][0]
    assert (result["width"], result["height"]) == (200, 120)
    mask = Image.open(io.BytesIO(client.post("/segment", content=data, headers={"Content-Type": "image/jpeg"}).content))
    assert mask.size == (200, 120)


def test_cmyk_jpeg(client: httpx.Client, parrot: Image.Image) -> None:
    cmyk = encode(parrot.convert("CMYK"), "JPEG", quality=95)
    as_decoded = Image.open(io.BytesIO(cmyk)).convert("RGB")
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    np.testing.assert_allclose(embedding(client, cmyk), embedding(client, encode(as_decoded, "PNG")), atol=1e-4)
    assert top1(classify(client, cmyk, "image/jpeg")) == MACAW


def test_palette_png(client: httpx.Client, parrot: Image.Image) -> None:
    palette = parrot.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    np.testing.assert_allclose(
        embedding(client, encode(palette, "PNG")), embedding(client, encode(palette.convert("RGB"), "PNG")), atol=1e-4
    )


def test_palette_with_transparency_is_composited_on_white(client: httpx.Client) -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (16, 16, 48, 48))
    expected = Image.new("RGB", (64, 64), (255, 255, 255))
    expected.paste((255, 0, 0), (16, 16, 48, 48))
    data = encode(image, "PNG", transparency=0)
    np.testing.assert_allclose(embedding(client, data), embedding(client, encode(expected, "PNG")), atol=1e-4)


def test_grayscale_16_bit_png_is_scaled_not_clipped(client: httpx.Client, parrot: Image.Image) -> None:
    gray = parrot.convert("L")
    wide = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    data = encode(wide, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    np.testing.assert_allclose(embedding(client, data), embedding(client, encode(gray, "PNG")), atol=1e-4)


def test_la_png(client: httpx.Client, parrot: Image.Image) -> None:
    gray = parrot.convert("L")
    la = gray.convert("LA")
    np.testing.assert_allclose(embedding(client, encode(la, "PNG")), embedding(client, encode(gray, "PNG")), atol=1e-4)


def test_rgba_png_composited_on_white(client: httpx.Client, parrot: Image.Image) -> None:
    rgba = parrot.convert("RGBA")
    alpha = Image.new("L", parrot.size, 255)
    alpha.paste(0, (0, 0, parrot.width, parrot.height // 3))
    rgba.putalpha(alpha)
    expected = parrot.copy()
    expected.paste((255, 255, 255), (0, 0, parrot.width, parrot.height // 3))
    np.testing.assert_allclose(
        embedding(client, encode(rgba, "PNG")), embedding(client, encode(expected, "PNG")), atol=1e-3
    )


def test_big_jpeg_uses_draft_and_still_classifies(client: httpx.Client, parrot: Image.Image) -> None:
    big = encode(parrot.resize((2048, 3716), Image.Resampling.BICUBIC), "JPEG", quality=90)
    assert top1(classify(client, big, "image/jpeg", model=TV_FP32)) == MACAW
    assert cosine(embedding(client, big), embedding(client, encode(parrot, "JPEG", quality=90))) > 0.97
