"""MediaPipe's own answers on the committed photos: tests/data/golden/mediapipe.json and mediapipe_masks.npz.

Runs `mediapipe==0.10.21`'s solutions (face_detection, selfie_segmentation), which pin their own numpy, so it
runs in a virtual environment of its own and imports nothing of this project:

    python -m venv /tmp/mp-venv && /tmp/mp-venv/bin/pip install mediapipe==0.10.21
    /tmp/mp-venv/bin/python model_store/build/mediapipe_goldens.py

The tests compare the service's boxes and masks with these files and never need mediapipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import mediapipe as mp
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "data" / "images"
GOLDEN = REPO / "tests" / "data" / "golden"
PHOTOS = ("face.jpg", "grace_hopper.png", "kite_and_cold.jpg", "pets.jpg", "parrot.jpg")
# Extreme aspect ratios: Grace Hopper's face (a crop of the photo) at the far end of a wide and of a tall grey
# canvas. The recipe goes into the golden file, and the tests rebuild the same pixels from it (a crop and a
# paste, no resampling).
COMPOSITES = {
    "grace_hopper_wide": {"photo": "grace_hopper.png", "crop": [150, 100, 400, 390], "canvas": [870, 290],
                          "offset": [600, 0], "fill": [90, 90, 90]},
    "grace_hopper_tall": {"photo": "grace_hopper.png", "crop": [150, 100, 400, 390], "canvas": [250, 870],
                          "offset": [0, 580], "fill": [90, 90, 90]},
}  # fmt: skip
# model_selection 0 is the short-range model, 1 the full-range one; each at its graph's own score threshold
# (face_detection_short_range.pbtxt 0.5, face_detection_full_range.pbtxt 0.6), as the store's manifests say.
DETECTORS = {"blazeface_short_range": (0, 0.5), "blazeface_full_range": (1, 0.6)}


def _faces(rgb: np.ndarray, selection: int, threshold: float) -> list[dict]:
    height, width = rgb.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=selection, min_detection_confidence=threshold) as fd:
        found = fd.process(rgb).detections or []
    faces = []
    for detection in found:
        box = detection.location_data.relative_bounding_box
        faces.append(
            {
                "score": float(detection.score[0]),
                "box": [
                    box.xmin * width,
                    box.ymin * height,
                    (box.xmin + box.width) * width,
                    (box.ymin + box.height) * height,
                ],
                "keypoints": [[k.x * width, k.y * height] for k in detection.location_data.relative_keypoints],
            }
        )
    return faces


def _person_probability(rgb: np.ndarray) -> np.ndarray:
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        return np.asarray(segmenter.process(rgb).segmentation_mask, dtype=np.float32)


def composite(recipe: dict) -> Image.Image:
    """A crop of a committed photo pasted onto a plain canvas."""
    canvas = Image.new("RGB", tuple(recipe["canvas"]), tuple(recipe["fill"]))
    piece = Image.open(IMAGES / recipe["photo"]).convert("RGB").crop(tuple(recipe["crop"]))
    canvas.paste(piece, tuple(recipe["offset"]))
    return canvas


def main() -> None:
    document: dict = {"mediapipe": mp.__version__, "detectors": DETECTORS, "images": {}}
    masks: dict[str, np.ndarray] = {}
    sources = {photo: Image.open(IMAGES / photo).convert("RGB") for photo in PHOTOS}
    sources.update({name: composite(recipe) for name, recipe in COMPOSITES.items()})
    for photo, image in sources.items():
        rgb = np.ascontiguousarray(np.asarray(image))
        entry: dict = {"size": [rgb.shape[1], rgb.shape[0]]}
        if photo in COMPOSITES:
            entry["recipe"] = COMPOSITES[photo]
        for name, (selection, threshold) in DETECTORS.items():
            entry[name] = _faces(rgb, selection, threshold)
        document["images"][photo] = entry
        # The probability in 1/255 steps, the precision of the service's matte.
        masks[photo] = np.clip(np.rint(_person_probability(rgb) * 255.0), 0, 255).astype(np.uint8)
        print(photo, {name: len(entry[name]) for name in DETECTORS})
    GOLDEN.mkdir(parents=True, exist_ok=True)
    (GOLDEN / "mediapipe.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    np.savez_compressed(GOLDEN / "mediapipe_masks.npz", **masks)


if __name__ == "__main__":
    main()
