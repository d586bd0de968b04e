"""torchvision's ImageNet eval transform, reimplemented with Pillow and NumPy only.

It must match `Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(...)` on a PIL
image bit for bit, because the goldens are made with it and the tests (which run
without torch) compare ONNX outputs against them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

CROP_FRACTION = 0.875
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize_shorter(image: Image.Image, shorter: int) -> Image.Image:
    """Resize(int): the longer side is truncated, not rounded, as torchvision does."""
    width, height = image.size
    if width <= height:
        size = (shorter, int(shorter * height / width))
    else:
        size = (int(shorter * width / height), shorter)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """CenterCrop(int) for an image at least `size` on each side.

    torchvision uses Python's round(), i.e. round-half-to-even, for the offsets.
    """
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_normalized_chw(image: Image.Image) -> np.ndarray:
    """ToTensor + Normalize, in float32 with the same operation order as torch."""
    pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
    chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return (chw - MEAN[:, None, None]) / STD[:, None, None]


def torchvision_reference(path: str | Path, size: int = 224) -> np.ndarray:
    """float32 [3, size, size] as torchvision's eval preset would feed MobileNetV2.

    For size 224 the shorter side goes to 256, as in torchvision; other sizes keep
    the same 0.875 crop fraction, flooring like timm's eval transform.
    """
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    resized = resize_shorter(image, math.floor(size / CROP_FRACTION))
    return to_normalized_chw(center_crop(resized, size))
