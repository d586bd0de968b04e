"""Decode an uploaded image with Pillow and turn it into the float32 CHW tensor a variant expects."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import ServiceError
from .image_checks import open_image

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
class PreprocessSpec:
    crop: str
    crop_fraction: float
    resize_filter: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: str
    color: str


# MediaPipe's crop modes: the whole image mapped onto the input square as its ImageToTensorCalculator does it.
MEDIAPIPE_CROPS = ("letterbox", "stretch")


@dataclass(frozen=True)
class Letterbox:
    """Where the whole image lies in the square input, aspect ratio kept and centred: input = image * scale + offset."""

    left: float
    top: float
    scale: float

    def to_original(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input-pixel coordinates to coordinates in the original image."""
        return (x - self.left) / self.scale, (y - self.top) / self.scale


def letterbox(size: tuple[int, int], resolution: int) -> Letterbox:
    """The image of `size` (width, height) fitted into a `resolution` square, as MediaPipe pads its region of
    interest to the square around the image's centre; the postprocessing recomputes it from the original size."""
    width, height = size
    scale = resolution / max(width, height)
    return Letterbox((resolution - width * scale) / 2, (resolution - height * scale) / 2, scale)


def mediapipe_warp(image: Image.Image, resolution: int, keep_aspect: bool) -> Image.Image:
    """The image sampled onto the input square as MediaPipe's CPU ImageToTensorCalculator samples it.

    OpenCV's warpPerspective maps output pixel (x, y) to x * S / resolution from the region's corner, in
    coordinates where a pixel's centre is its index, and interpolates bilinearly without smoothing; outside the
    image it reads zeros (the letterbox's black border). MediaPipe's models were trained and are run on exactly
    these pixels: an antialiased resize moved BlazeFace's boxes by up to 0.16 IoU on the committed photos.
    Pillow's affine transform takes pixel centres at index + 0.5, hence the half-pixel terms.
    """
    width, height = image.size
    if keep_aspect:
        side = max(width, height)
        scale_x = scale_y = side / resolution
        corner_x, corner_y = (width - side) / 2, (height - side) / 2
    else:
        scale_x, scale_y = width / resolution, height / resolution
        corner_x = corner_y = 0.0
    data = (scale_x, 0.0, corner_x + 0.5 - scale_x / 2, 0.0, scale_y, corner_y + 0.5 - scale_y / 2)
    return image.transform(
        (resolution, resolution), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray  # float32 [3, resolution, resolution]
    original_size: tuple[int, int]  # (width, height) of the upright image


def prepare(source: bytes | Image.Image, spec: PreprocessSpec, resolution: int, max_pixels: int) -> PreparedImage:
    rgb, original_size = decode(source, spec, resolution, max_pixels)
    return PreparedImage(normalize(resize(rgb, spec, resolution), spec), original_size)


def decode(
    source: bytes | Image.Image, spec: PreprocessSpec, resolution: int, max_pixels: int
) -> tuple[Image.Image, tuple[int, int]]:
    """The upright RGB image (possibly DCT-downscaled) and the upright size of the original.

    `source` is the encoded image, or what `open_image` made of it.
    """
    image = source if isinstance(source, Image.Image) else open_image(source, max_pixels)
    stored_size = image.size
    if image.format in _JPEG_FORMATS:
        needed = _draft_size(spec, resolution)
        image.draft(image.mode, (needed, needed))
    try:
        # Before anything reads the EXIF: for a PNG that read loads the pixels, and a failure swallowed
        # there would leave a second load() to return a half-decoded image.
        image.load()
    except Exception as exc:
        raise ServiceError(400, f"image data is truncated or corrupt ({exc})", code="bad_image") from exc
    width, height = stored_size
    original_size = (height, width) if _orientation(image) in _ROTATING_ORIENTATIONS else (width, height)
    try:
        return to_rgb(_orient(image)), original_size
    except Exception as exc:
        raise ServiceError(400, f"image data is truncated or corrupt ({exc})", code="bad_image") from exc


def decoded_pixels(image: Image.Image, spec: PreprocessSpec, resolution: int) -> int:
    """How many pixels decoding an opened image will produce: a JPEG's after DCT downscaling, as Pillow's draft does."""
    width, height = image.size
    if image.format not in _JPEG_FORMATS:
        return width * height
    needed = _draft_size(spec, resolution)
    reduction = min(width // needed, height // needed)
    scale = next((s for s in (8, 4, 2) if reduction >= s), 1)
    return -(-width // scale) * -(-height // scale)


def _draft_size(spec: PreprocessSpec, resolution: int) -> int:
    # DCT-domain downscaling of big JPEGs (1/2, 1/4 or 1/8 scale) that keeps REDUCING_GAP times the
    # pixels the resize needs, so the final filter still smooths: Pillow's thumbnail() trade-off.
    return math.ceil(_decode_size_needed(spec, resolution) * REDUCING_GAP)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(_EXIF_ORIENTATION)  # type: ignore[no-any-return]
    except Exception:
        return None


def _orient(image: Image.Image) -> Image.Image:
    try:
        # in_place: an upright image (the usual case) is returned without copying its pixels.
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except Exception:
        # Unreadable EXIF must not cost the client its answer: serve the pixels as stored.
        return image


def _decode_size_needed(spec: PreprocessSpec, resolution: int) -> int:
    if spec.crop == "none" or spec.crop in MEDIAPIPE_CROPS:
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
    if spec.crop in MEDIAPIPE_CROPS:
        return mediapipe_warp(image, resolution, keep_aspect=spec.crop == "letterbox")
    box = crop_box(image.size, spec, resolution)
    return image.resize((resolution, resolution), resample=resample, box=box)


def crop_box(size: tuple[int, int], spec: PreprocessSpec, resolution: int) -> tuple[float, float, float, float] | None:
    width, height = size
    if spec.crop == "none" or spec.crop in MEDIAPIPE_CROPS:
        return None
    if spec.crop == "central_fraction" and spec.crop_fraction >= 1.0:
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


def normalize(image: Image.Image | np.ndarray, spec: PreprocessSpec) -> np.ndarray:
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
