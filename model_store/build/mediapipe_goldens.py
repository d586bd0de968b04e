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


def main() -> None:
    document: dict = {"mediapipe": mp.__version__, "detectors": DETECTORS, "images": {}}
    masks: dict[str, np.ndarray] = {}
    for photo in PHOTOS:
        rgb = np.ascontiguousarray(np.asarray(Image.open(IMAGES / photo).convert("RGB")))
        entry: dict = {"size": [rgb.shape[1], rgb.shape[0]]}
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
