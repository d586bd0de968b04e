"""Large images over HTTP: decoded before they queue, by a niced decoder, with the answers a batch gives.

python -m pytest tests/reliability/test_large_images.py
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from harness import ServerProcess, running_server
from hostile_images import slow_png
from PIL import Image
from support import IMAGES, STORE, V1_SMALL, image_bytes

from service.preprocess import prepare
from service.runtime import open_session
from service.store import parse_variant

LARGE = 1_000_000  # pixels: the upscaled test photos below decode to more


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {
        "models": [V1_SMALL],
        "default_model": V1_SMALL,
        "large_image_pixels": LARGE,
        "intra_op_threads": 2,
        "default_batching": {"timeout_ms": 3000},
    }
    with running_server(tmp_path_factory.mktemp("large"), config) as process:
        yield process


def _large(name: str) -> bytes:
    """A test photo at 1600x1200 as a PNG (no DCT downscaling), 1.9 million pixels to decode."""
    buffer = io.BytesIO()
    Image.open(IMAGES / name).convert("RGB").resize((1600, 1200)).save(buffer, "PNG")
    return buffer.getvalue()


def _classify(http: httpx.Client, data: bytes, content_type: str = "image/png") -> httpx.Response:
    return http.post("/classify", content=data, headers={"Content-Type": content_type}, params={"top_k": 5})


def test_a_large_image_gets_the_answer_of_its_tensor_run_alone(server: ServerProcess) -> None:
    variant = parse_variant(STORE / V1_SMALL)
    session = open_session(variant.onnx_path, 1)
    with server.client() as http:
        for name in ("cat.png", "parrot.jpg"):
            data = _large(name)
            tensor = prepare(data, variant.preprocess, variant.native_resolution, 10**9).tensor
            logits = session.run(["logits"], {"image": tensor[None]})[0][0]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            response = _classify(http, data)
            assert response.status_code == 200, response.text
            served = response.json()["results"][0]["predictions"]
            assert [p["class_id"] for p in served] == list(np.argsort(-probs)[:5])
            for prediction in served:
                assert prediction["score"] == pytest.approx(float(probs[prediction["class_id"]]), abs=1e-5)


def test_the_large_image_decoder_runs_niced_beside_the_others(server: ServerProcess) -> None:
    children = psutil.Process(server.process.pid).children()
    niceness = sorted(os.getpriority(os.PRIO_PROCESS, child.pid) for child in children)
    assert niceness == [0, 0, 10], niceness  # one decoder per core, and the large images' own


def test_small_images_keep_flowing_beside_large_ones_and_a_full_lane_says_busy(server: ServerProcess) -> None:
    small, slow = image_bytes("parrot.jpg"), slow_png()
    with server.client() as http, ThreadPoolExecutor(40) as pool:
        large = [pool.submit(_classify, http, slow) for _ in range(24)]
        honest = [pool.submit(_classify, http, small, "image/jpeg") for _ in range(16)]
        assert [answer.result().status_code for answer in honest] == [200] * 16
        statuses = [answer.result().status_code for answer in large]
        codes = [answer.result().json()["error"]["code"] for answer in large if answer.result().status_code == 503]
    # 16 may wait for the lane; the rest are refused at once, and those that waited too long time out.
    assert statuses.count(503) >= 24 - 16 and set(codes) == {"busy"}, statuses
    assert set(statuses) <= {200, 503, 504}, statuses
