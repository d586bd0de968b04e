"""GET /v1/tradeoffs: the profile's accuracy beside the latency calibrated on this host, and its frontier."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
from harness import ServerProcess, running_server
from support import STORE, TV_INT8, V1_SMALL, image_bytes

from service.store import parse_variant
from service.tradeoffs import PROFILE_NAME, on_frontier

MODELS = [V1_SMALL, TV_INT8]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": MODELS + ["deeplabv3_mnv2_dm05_pascal"], "default_model": TV_INT8}
    with running_server(tmp_path_factory.mktemp("tradeoffs"), config) as process:
        yield process


def test_every_resolution_of_every_served_classifier_has_accuracy_and_latency(server: ServerProcess) -> None:
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    measured = {(p["model"], p["resolution"]): p for p in profile["points"]}
    with server.client() as http:
        body = http.get("/v1/tradeoffs").json()
    assert body["dataset"] == profile["dataset"] and body["command"] == profile["command"]
    points = body["points"]
    expected = {(name, r) for name in MODELS for r in parse_variant(STORE / name).resolutions}
    assert {(p["model"], p["resolution"]) for p in points} == expected  # DeepLab is no ImageNet classifier
    for point in points:
        assert point["top1"] == measured[(point["model"], point["resolution"])]["top1"]
        timing = point["timing"]
        assert 0 < timing["alone_ms"] and 0 < timing["batch_ms"] and 0 < timing["decode_ms"] < 1000
        assert timing["batch_size"] >= 1
        assert point["latency_ms"] == pytest.approx(timing["alone_ms"] + timing["decode_ms"], abs=0.01)
    flags = on_frontier([p["top1"] for p in points], [p["latency_ms"] for p in points])
    assert [p["frontier"] for p in points] == flags and any(flags)


def test_costs_grow_with_resolution_on_this_host(server: ServerProcess) -> None:
    with server.client() as http:
        points = http.get("/v1/tradeoffs").json()["points"]
    for name in MODELS:
        mine = sorted((p for p in points if p["model"] == name), key=lambda p: p["resolution"])
        assert [p["macs"] for p in mine] == sorted(p["macs"] for p in mine)
        # The largest input costs more than the smallest: at least twice the pixels, timed on the same core.
        assert mine[-1]["timing"]["alone_ms"] > mine[0]["timing"]["alone_ms"]


def test_a_store_without_a_profile_answers_404_and_no_calibration_leaves_latency_null(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store = tmp_path_factory.mktemp("store-without-profile")
    shutil.copytree(STORE / V1_SMALL, store / V1_SMALL)
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "calibration_seconds": 0}
    with running_server(tmp_path_factory.mktemp("no-profile"), config, store) as process, process.client() as http:
        response = http.get("/v1/tradeoffs")
        assert response.status_code == 404 and response.json()["error"]["code"] == "no_profile"
        auto = http.post("/classify?model=auto", content=image_bytes("owl.jpg"), headers={"content-type": "image/jpeg"})
        assert auto.status_code == 503 and PROFILE_NAME in auto.json()["error"]["message"]
        shutil.copy(STORE / PROFILE_NAME, store / PROFILE_NAME)
    with running_server(tmp_path_factory.mktemp("uncalibrated"), config, store) as process, process.client() as http:
        body = http.get("/v1/tradeoffs").json()
        auto = http.post("/classify?model=auto", content=image_bytes("owl.jpg"), headers={"content-type": "image/jpeg"})
    points = body["points"]
    assert points and all(p["latency_ms"] is None and p["timing"] is None and not p["frontier"] for p in points)
    assert all(p["top1"] is not None for p in points)
    # Auto never decides on costs measured elsewhere: without this host's timings it declines.
    assert not body["auto"]["available"] and "calibration_seconds" in body["auto"]["reason"]
    assert auto.status_code == 503 and auto.json()["error"]["code"] == "auto_unavailable"


def test_a_figure_measured_on_other_weights_is_stale_and_unused(tmp_path_factory: pytest.TempPathFactory) -> None:
    store = tmp_path_factory.mktemp("store-with-stale-profile")
    shutil.copytree(STORE / V1_SMALL, store / V1_SMALL)
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    for point in profile["points"]:
        if point["model"] == V1_SMALL and point["resolution"] == 160:
            point["sha256"] = "0" * 64  # as if another build of the model had been measured
    (store / PROFILE_NAME).write_text(json.dumps(profile))
    config = {"models": [V1_SMALL], "default_model": V1_SMALL}
    with running_server(tmp_path_factory.mktemp("stale"), config, store) as process, process.client() as http:
        points = {p["resolution"]: p for p in http.get("/v1/tradeoffs").json()["points"]}
    assert points[160]["profile_stale"] and points[160]["top1"] is None and not points[160]["frontier"]
    assert not points[128]["profile_stale"] and points[128]["top1"] is not None
