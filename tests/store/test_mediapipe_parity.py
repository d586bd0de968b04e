"""The MediaPipe variants against the TFLite interpreter running the files they were converted from.

Both runtimes get the same float input, the service's own preprocessing of committed photos (faces, people,
and photos with neither), so any difference comes from the conversion or from float32 summation order.
Measured over these photos: regressors differ by at most 3e-4 (of values up to ~140), face logits by 1.2e-3,
person probabilities by 1.2e-4; the tolerances below leave a few times that.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from support import IMAGES, STORE

from model_store.build import mediapipe_variants
from service.preprocess import prepare
from service.runtime import open_session
from service.ssd import detect
from service.store import Variant, parse_variant

PHOTOS = ["face.jpg", "kite_and_cold.jpg", "grace_hopper.png", "parrot.jpg", "cat.png", "pets.jpg"]
REGRESSOR_TOLERANCE = 1e-3
LOGIT_TOLERANCE = 5e-3
PROBABILITY_TOLERANCE = 5e-4
# Decoded boxes, as fractions of the input square, and scores.
BOX_TOLERANCE = 1e-4
DETECTORS = [v for v in mediapipe_variants.VARIANTS if v.task == "face_detect"]
SEGMENTER = next(v for v in mediapipe_variants.VARIANTS if v.task == "person_segment")


@cache
def session(name: str) -> ort.InferenceSession:
    return open_session(STORE / name / "model.onnx", os.cpu_count() or 1)


@cache
def variant(name: str) -> Variant:
    return parse_variant(STORE / name)


def tensor(photo: str, served: Variant) -> np.ndarray:
    """The service's input tensor for `photo`, [3, S, S]."""
    return prepare((IMAGES / photo).read_bytes(), served.preprocess, served.native_resolution, 10**9).tensor


def tflite_outputs(source: str, image: np.ndarray, names: dict[str, str]) -> dict[str, np.ndarray]:
    interpreter = Interpreter(str(STORE / "sources" / source))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image.transpose(1, 2, 0)[None])
    interpreter.invoke()
    by_name = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    return {ours: by_name[theirs] for ours, theirs in names.items()}


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda v: v.name)
def test_detector_matches_tflite(detector: mediapipe_variants.MediapipeVariant) -> None:
    served = variant(detector.name)
    assert served.detector is not None
    found_any = False
    for photo in PHOTOS:
        image = tensor(photo, served)
        reference = tflite_outputs(detector.source, image, detector.outputs)
        ours = dict(zip(detector.outputs, session(detector.name).run(list(detector.outputs), {"image": image[None]})))
        np.testing.assert_allclose(ours["regressors"], reference["regressors"], atol=REGRESSOR_TOLERANCE)
        np.testing.assert_allclose(ours["classificators"], reference["classificators"], atol=LOGIT_TOLERANCE)
        mine = detect(ours["regressors"][0], ours["classificators"][0], served.detector)
        theirs = detect(reference["regressors"][0], reference["classificators"][0], served.detector)
        assert mine.scores.size == theirs.scores.size, photo
        np.testing.assert_allclose(mine.boxes, theirs.boxes, atol=BOX_TOLERANCE)
        np.testing.assert_allclose(mine.keypoints, theirs.keypoints, atol=BOX_TOLERANCE)
        np.testing.assert_allclose(mine.scores, theirs.scores, atol=BOX_TOLERANCE)
        found_any |= bool(mine.scores.size)
    assert found_any, "no photo had a face: the comparison of detections proved nothing"


def test_segmenter_matches_tflite() -> None:
    served = variant(SEGMENTER.name)
    for photo in PHOTOS:
        image = tensor(photo, served)
        reference = tflite_outputs(SEGMENTER.source, image, SEGMENTER.outputs)["person_probability"][0, :, :, 0]
        ours = session(SEGMENTER.name).run(["person_probability"], {"image": image[None]})[0][0, 0]
        np.testing.assert_allclose(ours, reference, atol=PROBABILITY_TOLERANCE)
        assert ((ours > 0.5) == (reference > 0.5)).mean() >= 0.9999, photo


@pytest.mark.parametrize("name", [v.name for v in mediapipe_variants.VARIANTS])
def test_dynamic_batch(name: str) -> None:
    """A batch of three gives each image what it gets alone: the batch dimension is free in every graph."""
    served = variant(name)
    images = np.stack([tensor(photo, served) for photo in ("face.jpg", "kite_and_cold.jpg", "grace_hopper.png")])
    outputs = [o.name for o in session(name).get_outputs()]
    batched = session(name).run(outputs, {"image": images})
    for row in range(3):
        alone = session(name).run(outputs, {"image": images[row : row + 1]})
        for b, a in zip(batched, alone, strict=True):
            np.testing.assert_allclose(b[row : row + 1], a, atol=1e-5)


def test_manifests_carry_what_the_service_needs() -> None:
    for mp in mediapipe_variants.VARIANTS:
        manifest = json.loads((STORE / mp.name / "manifest.json").read_text())
        assert manifest["tasks"] == [mp.task]
        assert manifest["source"]["license"] == "Apache-2.0"
        assert "mediapipe==0.10.21" in manifest["source"]["origin"]
        assert {o.name for o in session(mp.name).get_outputs()} == set(mp.outputs)
        served = variant(mp.name)
        if mp.task == "face_detect":
            assert served.detector is not None
            assert served.detector.decode.num_boxes == session(mp.name).get_outputs()[0].shape[1]
    # Published: BlazeFace short range has 896 anchors at strides 8 (2 per cell) and 16 (6 per cell).
    assert variant("blazeface_short_range").detector.decode.num_boxes == 16 * 16 * 2 + 8 * 8 * 6


@pytest.mark.parametrize("name", [v.name for v in mediapipe_variants.VARIANTS])
def test_conversion_is_deterministic(tmp_path: Path, name: str) -> None:
    mediapipe_variants.build(tmp_path, {name})
    for file in ("model.onnx", "labels.txt", "manifest.json"):
        assert (tmp_path / name / file).read_bytes() == (STORE / name / file).read_bytes(), file
