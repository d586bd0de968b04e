"""Encoders of the MediaPipe tasks: faces as single-shot detections, and the person mask or matte.

The face detector's input is the whole image letterboxed into its square (preprocess.letterbox), so the
boxes and keypoints it decodes are mapped back through the same letterbox, recomputed from the original
size. The segmenter's input is the whole image stretched to its square; its probability map is resized
back bilinearly, as MediaPipe's TensorsToSegmentationCalculator does, before it is thresholded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .postprocess import VOC_PALETTE, Answer, Encoded, json_answer, model_headers, png_bytes
from .preprocess import letterbox
from .ssd import detect

if TYPE_CHECKING:
    from .instance import ImageResult

# A pixel is the person's where the model says it is more likely than not.
PERSON_THRESHOLD = 0.5
METHOD_SSD = "ssd"
# Mask pixel values: 0 background, 1 person; the person is drawn in PASCAL VOC's colour for "person".
_VOC_PERSON = 15
_PERSON_PALETTE = VOC_PALETTE[:3] + VOC_PALETTE[3 * _VOC_PERSON : 3 * _VOC_PERSON + 3] + [0, 0, 0] * 254


def encode_face_detect(answer: Answer, min_score: float | None) -> Encoded:
    variant = answer.variant
    spec = variant.detector
    assert spec is not None  # the store refuses a face_detect variant without it
    results = []
    for result in answer.results:
        width, height = result.original_size
        found = detect(result.outputs[0], result.outputs[1], spec, min_score)
        place = letterbox((width, height), answer.resolution)
        # The decoded coordinates are fractions of the input square.
        side = answer.resolution
        x0, y0 = place.to_original(found.boxes[:, 0] * side, found.boxes[:, 1] * side)
        x1, y1 = place.to_original(found.boxes[:, 2] * side, found.boxes[:, 3] * side)
        px, py = place.to_original(found.keypoints[:, :, 0] * side, found.keypoints[:, :, 1] * side)
        detections = []
        for i in range(found.scores.size):
            box = [
                float(np.clip(x0[i], 0, width)),
                float(np.clip(y0[i], 0, height)),
                float(np.clip(x1[i], 0, width)),
                float(np.clip(y1[i], 0, height)),
            ]
            keypoints = [
                {"name": name, "x": float(px[i, k]), "y": float(py[i, k])} for k, name in enumerate(spec.keypoint_names)
            ]
            detections.append(
                {"class_id": 0, "label": variant.labels[0], "score": float(found.scores[i]), "box": box,
                 "keypoints": keypoints}
            )  # fmt: skip
        results.append({"width": width, "height": height, "detections": detections})
    return json_answer(
        {"model": variant.name, "resolution": answer.resolution, "method": METHOD_SSD, "results": results}
    )


def person_probability(result: ImageResult) -> np.ndarray:
    """The person's probability at the original size, [height, width] float32 in 0..1."""
    plane = np.ascontiguousarray(result.outputs[0][0], dtype=np.float32)
    size = result.original_size
    if (plane.shape[1], plane.shape[0]) == size:
        return plane
    return np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BILINEAR))


def encode_person_segment(answer: Answer, matte: bool) -> Encoded:
    """The person mask (palette PNG, 1 where the person is), or with `matte` the probability as 8-bit grey."""
    probability = person_probability(answer.results[0])
    if matte:
        image = Image.fromarray(np.clip(np.rint(probability * 255.0), 0, 255).astype(np.uint8))
    else:
        image = Image.fromarray((probability > PERSON_THRESHOLD).astype(np.uint8))
        image.putpalette(_PERSON_PALETTE)
    headers: dict[str, Any] = {**model_headers(answer), "X-Mask": "matte" if matte else "person"}
    return Encoded(png_bytes(image), "image/png", headers)
