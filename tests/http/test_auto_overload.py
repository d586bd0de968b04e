"""Degrade instead of refusing, asserted on behaviour: under the same open-loop overload a fixed model answers 429
where model=auto answers 200, and auto's selection metrics show it moved down the frontier and back up after.

The arrival rate comes from this host's own calibration (GET /v1/tradeoffs): about twice what the most
accurate point can run on the cores, and well within what the cheapest can. Timing is not asserted;
bench/overload.py measures it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from harness import LOOPBACK, ServerProcess, running_server
from open_loop import OpenLoop, run
from support import PHOTOS, TV_FP32, TV_INT8, V1_SMALL, image_bytes, metric_samples

SECONDS = 4.0
JPEGS = [name for name in PHOTOS if name.endswith(".jpg")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Three models, so that auto has three queues to spread over while the most accurate point's fills.
    config = {
        "models": [TV_FP32, TV_INT8, V1_SMALL],
        "default_model": TV_INT8,
        "intra_op_threads": 2,
        "default_batching": {"max_queue_size": 32},
        "auto": {"hold_seconds": 0.5},
    }
    with running_server(tmp_path_factory.mktemp("auto-overload"), config) as process:
        yield process


def _selections(server: ServerProcess) -> dict[tuple[str, str], float]:
    with server.client() as http:
        text = http.get("/metrics").text
    samples = metric_samples(text).get("mobilenet_auto_selections_total", [])
    counts: dict[tuple[str, str], float] = {}
    for labels, value in samples:
        key = (labels["model"], labels["resolution"])
        counts[key] = counts.get(key, 0.0) + value
    return counts


def test_auto_answers_where_the_fixed_model_refuses_and_climbs_back_after(server: ServerProcess) -> None:
    with server.client() as http:
        tradeoffs = http.get("/v1/tradeoffs").json()
    frontier = tradeoffs["auto"]["points"]
    latency = {(p["model"], p["resolution"]): p["latency_ms"] for p in tradeoffs["points"]}
    top, cheapest = frontier[-1], frontier[0]
    top_key, cheap_key = (top["model"], top["resolution"]), (cheapest["model"], cheapest["resolution"])
    assert latency[top_key] > 2 * latency[cheap_key], "the frontier must span a real cost range for this test"
    # Twice what the top point can run on two cores, counting the work outside the model as much again.
    rate = 2 * 2 * 1000.0 / (2 * latency[top_key])
    bodies = [image_bytes(name) for name in JPEGS]

    fixed = run(OpenLoop(LOOPBACK, server.port, f"/classify?model={top['model']}&resolution={top['resolution']}",
                         bodies, rate, SECONDS))  # fmt: skip
    time.sleep(3.0)  # the fixed model's queue drains
    before = _selections(server)
    auto = run(OpenLoop(LOOPBACK, server.port, "/classify?model=auto&latency_budget_ms=100", bodies, rate, SECONDS))
    during = _selections(server)

    fixed_statuses = [sent.status for sent in fixed]
    auto_statuses = [sent.status for sent in auto]
    assert fixed_statuses.count(429) > 0, f"the fixed model was not overloaded at {rate:.0f}/s"
    assert set(auto_statuses) == {200}, {s: auto_statuses.count(s) for s in set(auto_statuses)}
    answered = {(sent.model, sent.resolution) for sent in auto}
    moved = {key: during.get(key, 0) - before.get(key, 0) for key in during}
    cheaper = [key for key, count in moved.items() if count and key != (top["model"], str(top["resolution"]))]
    assert cheaper and answered - {top_key}, "auto did not move down the frontier"

    # Load gone: within a few holds auto answers with the most accurate point again.
    deadline = time.monotonic() + 15.0
    with server.client() as http:
        while time.monotonic() < deadline:
            body = http.post("/classify?model=auto", content=bodies[0], headers={"content-type": "image/jpeg"}).json()
            if (body["model"], body["resolution"]) == top_key:
                break
            time.sleep(0.2)
    assert (body["model"], body["resolution"]) == top_key, "auto did not climb back up the frontier"
    after = _selections(server)
    top_label = (top["model"], str(top["resolution"]))
    assert after[top_label] > during.get(top_label, 0)
