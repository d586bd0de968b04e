"""Model outputs to answers: each task's encoder, and the softmax, top-k, unit vectors, .npz features,
regions and PNG masks they are made of."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from PIL import Image
from scipy import ndimage

from .responses import JSON_OPTIONS

if TYPE_CHECKING:
    from .instance import ImageResult
    from .store import Variant

JSON = "application/json"

# A region smaller than this fraction of the image is noise at DeepLab's output stride, not an object.
MIN_REGION_FRACTION = 0.001
# The largest side regions are found at: twice DeepLab's 513-pixel mask, so no detail of it is lost.
REGION_SIDE = 1026
BACKGROUND_CLASS = 0
# How /detect's boxes were made, in its answers: connected regions of a segmentation mask.
METHOD_MASK_REGIONS = "mask_regions"
# 8-connectivity: diagonal neighbours belong to the same region.
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Answer:
    """A task's results, for its encoder: the images' outputs in the order of `Task.outputs`."""

    variant: Variant
    resolution: int
    results: list[ImageResult]


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Region:
    class_id: int
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1; x1 and y1 exclusive, original-image pixels
    area: int


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along `axis`, computed in float64 so that scores near 1 keep their last digits."""
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=axis, keepdims=True)
    return probs


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and softmax probabilities of the k best classes of one image, best first."""
    probs = softmax(logits)
    k = min(k, probs.shape[0])
    ids = np.argpartition(-probs, k - 1)[:k] if k < probs.shape[0] else np.arange(probs.shape[0])
    ids = ids[np.argsort(-probs[ids], kind="stable")]
    return ids, probs[ids]


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    contiguous: dict[str, Any] = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
    np.savez(buffer, **contiguous)
    return buffer.getvalue()


def resized_nearest(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a [H, W] class-id mask or probability map to (width, height)."""
    if (plane.shape[1], plane.shape[0]) == size:
        return plane
    source = plane.astype(np.float32 if plane.dtype.kind == "f" else np.uint8)
    return np.asarray(Image.fromarray(source).resize(size, Image.Resampling.NEAREST))


def regions(seg_logits: np.ndarray, size: tuple[int, int], min_fraction: float = MIN_REGION_FRACTION) -> list[Region]:
    """Connected regions of each non-background class, as boxes in the original image of `size`.

    The regions are found at `size` scaled down to at most REGION_SIDE pixels a side, never finer than
    the model's own mask needs, so that a huge declared size costs no more than a moderate one; boxes
    and areas are then scaled up to the original.
    """
    width, height = size
    scale = min(1.0, REGION_SIDE / max(width, height))
    work = (max(1, round(width * scale)), max(1, round(height * scale)))
    sx, sy = width / work[0], height / work[1]
    class_probability = _class_probabilities(seg_logits)
    mask = resized_nearest(seg_logits.argmax(axis=0).astype(np.uint8), work)
    min_area = max(1, int(np.ceil(min_fraction * work[0] * work[1])))
    found: list[Region] = []
    for class_id in np.unique(mask):
        if class_id == BACKGROUND_CLASS:
            continue
        labels, count = ndimage.label(mask == class_id, structure=_CONNECTIVITY)
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        keep = [label for label in range(1, count + 1) if areas[label] >= min_area]
        if not keep:
            continue
        means = ndimage.mean(resized_nearest(class_probability(class_id), work), labels, keep)
        slices = ndimage.find_objects(labels)
        for label, mean in zip(keep, means, strict=True):
            rows, cols = slices[label - 1]
            box = (
                int(cols.start * sx),
                int(rows.start * sy),
                min(width, math.ceil(cols.stop * sx)),
                min(height, math.ceil(rows.stop * sy)),
            )
            found.append(Region(int(class_id), float(mean), box, round(int(areas[label]) * sx * sy)))
    found.sort(key=lambda region: region.score, reverse=True)
    return found


def _class_probabilities(seg_logits: np.ndarray) -> Callable[[int], np.ndarray]:
    """Each pixel's softmax probability of one class, computed for the classes asked for only.

    In float32 and one class plane at a time, which takes a fraction of a float64 softmax of every plane.
    """
    top = seg_logits.max(axis=0)
    total = np.zeros_like(top, dtype=np.float32)
    for plane in seg_logits:
        total += np.exp(plane - top, dtype=np.float32)
    return lambda class_id: np.exp(seg_logits[class_id] - top, dtype=np.float32) / total


def mask_png(seg_logits: np.ndarray, size: tuple[int, int]) -> bytes:
    """The argmax class mask at the original size, as a palette PNG whose pixel values are class ids."""
    mask = resized_nearest(seg_logits.argmax(axis=0).astype(np.uint8), size)
    image = Image.fromarray(np.ascontiguousarray(mask))
    # putpalette turns the "L" image into "P" with the same pixel values, so they stay class ids.
    image.putpalette(VOC_PALETTE)
    return png_bytes(image)


def png_bytes(image: Image.Image) -> bytes:
    """A mask as PNG, compressed lightly: masks compress well anyway, and the encoder's time is the request's."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def json_answer(document: dict[str, Any]) -> Encoded:
    return Encoded(orjson.dumps(document, option=JSON_OPTIONS), JSON)


def model_headers(answer: Answer) -> dict[str, str]:
    return {"X-Model": answer.variant.name, "X-Resolution": str(answer.resolution)}


def encode_classify(answer: Answer, k: int, selection: dict[str, Any] | None = None) -> Encoded:
    labels = answer.variant.labels
    results = []
    for result in answer.results:
        ids, scores = top_k(result.outputs[0], k)
        predictions = [
            {"class_id": int(i), "label": labels[i], "score": float(s)} for i, s in zip(ids, scores, strict=True)
        ]
        results.append({"predictions": predictions})
    body: dict[str, Any] = {"model": answer.variant.name, "resolution": answer.resolution, "results": results}
    if selection is not None:
        body["selection"] = selection
    return json_answer(body)


def encode_embed(answer: Answer, normalize: bool) -> Encoded:
    vectors = [l2_normalize(r.outputs[0]) if normalize else r.outputs[0] for r in answer.results]
    return json_answer(
        {
            "model": answer.variant.name,
            "resolution": answer.resolution,
            "dim": int(vectors[0].shape[0]),
            "normalized": normalize,
            "results": [{"embedding": vector} for vector in vectors],
        }
    )


def encode_backbone(answer: Answer) -> Encoded:
    keys = ("s8", "s16", "s32")
    results = answer.results
    if len(results) == 1:
        arrays = dict(zip(keys, results[0].outputs, strict=True))
    else:
        arrays = {key: np.stack([r.outputs[i] for r in results]) for i, key in enumerate(keys)}
    shapes = {key: list(array.shape) for key, array in arrays.items()}
    headers = {"X-Feature-Shapes": json.dumps(shapes), **model_headers(answer)}
    return Encoded(encode_npz(arrays), "application/x-npz", headers)


def encode_detect(answer: Answer, min_area: float) -> Encoded:
    labels = answer.variant.labels
    results = []
    for result in answer.results:
        width, height = result.original_size
        found = regions(result.outputs[0], (width, height), min_area)
        detections = [
            {"class_id": r.class_id, "label": labels[r.class_id], "score": r.score, "box": list(r.box), "area": r.area}
            for r in found
        ]
        results.append({"width": width, "height": height, "detections": detections})
    return json_answer(
        {
            "model": answer.variant.name,
            "resolution": answer.resolution,
            "method": METHOD_MASK_REGIONS,
            "results": results,
        }
    )


def encode_segment(answer: Answer) -> Encoded:
    result = answer.results[0]
    return Encoded(mask_png(result.outputs[0], result.original_size), "image/png", model_headers(answer))


def _voc_palette() -> list[int]:
    """PASCAL VOC's colour map: class i gets the colour the VOC devkit gives it."""
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.extend((red, green, blue))
    return palette


VOC_PALETTE = _voc_palette()
