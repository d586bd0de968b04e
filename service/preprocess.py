"""Decode an uploaded image with Pillow and turn it into the float32 CHW tensor a variant expects."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# Importing the whitelisted plugins registers them; Image.init() would load every format Pillow knows.
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin  # noqa: F401  isort: skip
from PIL import PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401  isort: skip

from .errors import ServiceError
from .store import PreprocessSpec

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Pillow's JPEG opener returns MPO for the multi-picture JPEGs many cameras write.
_JPEG_FORMATS = {"JPEG", "MPO"}
REDUCING_GAP = 2.0
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Transparent pixels are composited onto white, as a browser shows them.
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray  # float32 [3, resolution, resolution]
    original_size: tuple[int, int]  # (width, height) of the upright image


def prepare(data: bytes, spec: PreprocessSpec, resolution: int, max_pixels: int) -> PreparedImage:
    rgb, original_size = decode(data, spec, resolution, max_pixels)
    return PreparedImage(normalize(resize(rgb, spec, resolution), spec), original_size)


def decode(data: bytes, spec: PreprocessSpec, resolution: int, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """The upright RGB image (possibly DCT-downscaled) and the upright size of the original."""
    image = open_image(data, max_pixels)
    original_size = _upright_size(image)
    if image.format in _JPEG_FORMATS:
        # DCT-domain downscaling of big JPEGs (1/2, 1/4 or 1/8 scale) that keeps REDUCING_GAP times the
        # pixels the resize needs, so the final filter still smooths: Pillow's thumbnail() trade-off.
        needed = math.ceil(_decode_size_needed(spec, resolution) * REDUCING_GAP)
        image.draft(image.mode, (needed, needed))
    try:
        image.load()
        return to_rgb(_orient(image)), original_size
    except ServiceError:
        raise
    except Exception as exc:
        raise ServiceError(400, f"image data is truncated or corrupt ({exc})", code="bad_image") from exc


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the format and check the declared size, before any pixel is decoded."""
    if not data:
        raise ServiceError(400, "the image is empty (0 bytes)", code="empty_image")
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
        with Image.open(io.BytesIO(data)) as other:
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


def _upright_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        orientation = None
    return (height, width) if orientation in _ROTATING_ORIENTATIONS else (width, height)


def _orient(image: Image.Image) -> Image.Image:
    try:
        # in_place: an upright image (the usual case) is returned without copying its pixels.
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except Exception:
        # Unreadable EXIF must not cost the client its answer: serve the pixels as stored.
        return image


def _decode_size_needed(spec: PreprocessSpec, resolution: int) -> int:
    if spec.crop == "none":
        return resolution
    return math.ceil(resolution / spec.crop_fraction)


def to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit samples: scale 0..65535 to 0..255 instead of letting convert() clip at 255.
        wide = np.asarray(image, dtype=np.float32)
        gray = np.clip(wide / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize(image: Image.Image, spec: PreprocessSpec, resolution: int) -> Image.Image:
    """Crop and resize in one Pillow call: the box selects the crop in source coordinates."""
    resample = _FILTERS.get(spec.resize_filter.lower())
    if resample is None:
        raise ServiceError(500, f"unknown resize filter {spec.resize_filter!r} in the manifest")
    box = crop_box(image.size, spec, resolution)
    return image.resize((resolution, resolution), resample=resample, box=box)


def crop_box(size: tuple[int, int], spec: PreprocessSpec, resolution: int) -> tuple[float, float, float, float] | None:
    width, height = size
    if spec.crop == "none" or (spec.crop == "central_fraction" and spec.crop_fraction >= 1.0):
        return None
    if spec.crop == "central_fraction":
        # tf.image.central_crop's integer arithmetic, so TF-slim models see the pixels they were evaluated on.
        offset = int(1 / ((1 - spec.crop_fraction) / 2.0))
        top, left = int(height / offset), int(width / offset)
        return (left, top, width - left, height - top)
    # torchvision: Resize(int(res / fraction)) on the shorter side, then CenterCrop(res).
    shorter = int(resolution / spec.crop_fraction + 1e-6)
    if width <= height:
        new_w, new_h = shorter, int(shorter * height / width)
    else:
        new_w, new_h = int(shorter * width / height), shorter
    left = int(round((new_w - resolution) / 2.0))
    top = int(round((new_h - resolution) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)


def normalize(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    pixels = np.asarray(image)  # uint8 [H, W, 3]
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    # (x - mean) / std as one multiply and one add over the image.
    scale = np.float32(1.0) / std
    bias = np.negative(mean * scale)
    out = np.empty((3, pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    np.multiply(pixels.transpose(2, 0, 1), scale, out=out)
    out += bias
    return out
