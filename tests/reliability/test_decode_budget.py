"""The decode budget over HTTP: an image that takes too long is refused, its core is freed, the rest is served.

python -m pytest tests/reliability/test_decode_budget.py
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import ServerProcess, running_server
from hostile_images import slow_png
from support import V1_SMALL, image_bytes, metric_value

BUDGET = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "decode_budget_seconds": BUDGET, "intra_op_threads": 2}
    with running_server(tmp_path_factory.mktemp("budget"), config) as process:
        yield process


def _classify(http: httpx.Client, data: bytes, content_type: str) -> httpx.Response:
    return http.post("/classify", content=data, headers={"Content-Type": content_type})


def test_an_image_over_the_budget_is_refused_and_honest_images_keep_flowing(server: ServerProcess) -> None:
    slow, honest = slow_png(), image_bytes("parrot.jpg")
    with server.client() as http, ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        refused = pool.submit(_classify, http, slow, "image/png")
        answers = [pool.submit(_classify, http, honest, "image/jpeg") for _ in range(20)]
        assert all(a.result().status_code == 200 for a in answers)
        response = refused.result()
        elapsed = time.perf_counter() - started
        metrics = http.get("/metrics").text
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "image_too_costly"
    assert elapsed < 10 * BUDGET + 2.0
    assert metric_value(metrics, "mobilenet_decoder_restarts_total", model=V1_SMALL, reason="budget") >= 1


def test_sigterm_during_a_slow_decode_exits_within_the_grace(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "decode_budget_seconds": 30, "shutdown_grace_seconds": 2}
    with running_server(tmp_path_factory.mktemp("sigterm"), config) as process, process.client() as http:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_classify, http, slow_png(), "image/png")
            time.sleep(0.1)
            started = time.perf_counter()
            process.process.send_signal(signal.SIGTERM)
            process.process.wait(15)
            assert time.perf_counter() - started < 2 + 3.0
            pending.result()
