"""What the tests share apart from running a server (tests/harness.py does that): paths, model names, class ids,
test images, /metrics parsing, waiting for an in-process app to load its models, and running `mobilenet-serve import`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from model_store.build.golden_photos import PHOTOS as PHOTOS_OF_GOLDEN

# The paths the harness serves from, so that the tests take every path from this module.
REPO = harness.REPO
STORE = harness.STORE
DATA = REPO / "tests" / "data"
IMAGES = DATA / "images"
# Every committed image, named: a file left in the folder (an example's output) changes no test.
COMMITTED_IMAGES = [
    *PHOTOS_OF_GOLDEN, "bird_segmentation_mask.png", "dog_segmentation_mask.png", "face.jpg", "kite_and_cold.jpg"
]  # fmt: skip
# Eight photos of different subjects, in a fixed order, for tests that need several distinct images.
PHOTOS = ["cat.png", "parrot.jpg", "hot_dog.jpg", "owl.jpg", "pets.jpg", "bird.png", "sunflower.png", "dragonfly.png"]

TV_FP32 = "mobilenet_v2_1.0_224_tv"
TV_INT8 = "mobilenet_v2_1.0_224_tv_int8"
V1 = "mobilenet_v1_1.0_224"
V1_SMALL = "mobilenet_v1_0.25_128"
FACE_SHORT = "blazeface_short_range"
FACE_FULL = "blazeface_full_range"
SELFIE = "selfie_segmentation"
DEEPLAB = "deeplabv3_mnv2_pascal"
DEEPLAB_SMALL = "deeplabv3_mnv2_dm05_pascal"

CAT_IDS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
MACAW = 88
HOTDOG = 934
PASCAL_DOG = 12


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def content_type(name: str) -> str:
    return {"png": "image/png", "jpg": "image/jpeg"}[name.rsplit(".", 1)[-1]]


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed with prometheus_client's own parser."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(
        value
        for sample_labels, value in metric_samples(text).get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


def wait_until_all_arrived(url: str, model: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` images of `model` are in its queue or past preprocessing, so that a test can act while
    the later ones are still queued (waiting for all to be preprocessed leaves only the last batch to run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics", timeout=5).text
        queued = metric_value(text, "mobilenet_queue_depth", model=model)
        if queued + metric_value(text, "mobilenet_preprocess_duration_seconds_count", model=model) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} images of {model} did not arrive within {timeout} s")


def runs_larger_than_one(metrics_text: str, model: str) -> float:
    """ONNX Runtime runs of `model` that carried more than one image, from the batch-size histogram."""
    count = metric_value(metrics_text, "mobilenet_batch_size_count", model=model)
    single = metric_value(metrics_text, "mobilenet_batch_size_bucket", model=model, le="1.0")
    return count - single


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def top1(response_json: dict[str, Any], index: int = 0) -> int:
    return int(response_json["results"][index]["predictions"][0]["class_id"])


def run_import(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`mobilenet-serve import ARGS` as a user runs it: a process of its own, from the checkout."""
    command = [sys.executable, "-m", "service.cli", "import", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def wait_until_app_ready(client: httpx.Client, path: str = "/readyz", timeout: float = 60.0) -> None:
    """Poll an in-process app (a TestClient, which is an httpx.Client) until `path` answers 200.

    The app loads its models in the background after start-up, so the first requests may find none loaded.
    """
    deadline = time.monotonic() + timeout
    while client.get(path).status_code != 200:
        assert time.monotonic() < deadline, f"{path} did not answer 200 within {timeout} s"
        time.sleep(0.05)


def require_tool(found: object, install_hint: str) -> None:
    """A test's system tool (a Debian package .ci/run installs): a skip without it here, a failure under CI,
    where its absence means the set-up is broken rather than the machine lacking it."""
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(install_hint)
        pytest.skip(install_hint)
