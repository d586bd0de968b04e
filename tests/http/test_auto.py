"""POST /classify?model=auto against a real server: the choice it answers with, and each bad request's JSON error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from harness import ServerProcess, running_server
from PIL import Image
from support import DEEPLAB_SMALL, STORE, TV_INT8, V1_SMALL, encode, image_bytes, metric_value

from service.tradeoffs import PROFILE_NAME

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": [V1_SMALL, TV_INT8, DEEPLAB_SMALL], "default_model": TV_INT8}
    with running_server(tmp_path_factory.mktemp("auto"), config) as process:
        yield process


def test_an_idle_server_answers_with_the_most_accurate_frontier_point(server: ServerProcess) -> None:
    with server.client() as http:
        auto = http.get("/v1/tradeoffs").json()["auto"]
        response = http.post("/classify?model=auto&top_k=1", content=image_bytes("parrot.jpg"), headers=JPEG)
        metrics = http.get("/metrics").text
    assert auto["available"] and auto["reason"] is None and auto["default_budget_ms"] == 100
    top = auto["points"][-1]
    body = response.json()
    assert response.status_code == 200
    assert (body["model"], body["resolution"]) == (top["model"], top["resolution"])
    assert body["results"][0]["predictions"][0]["label"] == "macaw"
    selection = body["selection"]
    assert selection["mode"] == "auto" and selection["budget_ms"] == 100
    assert "within the budget" in selection["reason"] and 0 < selection["predicted_ms"] < 100
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    expected = next(
        p["top1"] for p in profile["points"] if (p["model"], p["resolution"]) == (body["model"], body["resolution"])
    )
    assert selection["expected_top1"] == expected
    labels = {"model": top["model"], "resolution": str(top["resolution"])}
    assert metric_value(metrics, "mobilenet_auto_selections_total", **labels) >= 1
    assert metric_value(metrics, "mobilenet_auto_latency_seconds_count", **labels) >= 1
    # The access log and request metrics name the model that answered, not "auto".
    assert metric_value(metrics, "mobilenet_requests_total", endpoint="/classify", model=top["model"]) >= 1


def test_a_tight_budget_chooses_a_cheaper_point_and_min_top1_a_better_one(server: ServerProcess) -> None:
    with server.client() as http:
        points = http.get("/v1/tradeoffs").json()["auto"]["points"]
        cheap = http.post("/classify?model=auto&latency_budget_ms=0.01", content=image_bytes("owl.jpg"), headers=JPEG)
        floor = http.post(
            "/classify?model=auto&latency_budget_ms=0.01&min_top1=75", content=image_bytes("owl.jpg"), headers=JPEG
        )
    assert cheap.status_code == 200 and floor.status_code == 200
    assert (cheap.json()["model"], cheap.json()["resolution"]) == (points[0]["model"], points[0]["resolution"])
    assert "cheapest" in cheap.json()["selection"]["reason"]
    assert floor.json()["selection"]["expected_top1"] >= 75


def test_over_budget_refuse_refuses_what_no_point_answers_in_time_and_answers_the_rest(server: ServerProcess) -> None:
    with server.client() as http:
        before = http.get("/metrics").text
        owl = image_bytes("owl.jpg")
        refused = http.post("/classify?model=auto&latency_budget_ms=0.01&over_budget=refuse", content=owl, headers=JPEG)
        answered = http.post("/classify?model=auto&over_budget=refuse", content=owl, headers=JPEG)
        after = http.get("/metrics").text
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "over_budget" and "within the budget of 0.01 ms" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    # Refused before it queued: the one image that ran is the answered request's.
    assert metric_value(after, "mobilenet_batch_size_sum") == metric_value(before, "mobilenet_batch_size_sum") + 1
    assert answered.status_code == 200 and "within the budget" in answered.json()["selection"]["reason"]


def test_over_budget_refuse_gives_up_once_the_budget_has_passed(server: ServerProcess) -> None:
    # A 4-megapixel photo of noise costs many times the calibration's 640x480 photo to decode, so the point
    # predicted within twice the cheapest point's calibrated time overruns that budget: given up, not answered.
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    photo = encode(Image.fromarray(noise), "JPEG", quality=95, subsampling=0)
    with server.client() as http:
        tradeoffs = http.get("/v1/tradeoffs").json()
        cheapest = tradeoffs["auto"]["points"][0]
        latency = {(p["model"], p["resolution"]): p["latency_ms"] for p in tradeoffs["points"]}
        budget = f"latency_budget_ms={2 * latency[cheapest['model'], cheapest['resolution']]:.3f}"
        hard = http.post(f"/classify?model=auto&{budget}&over_budget=refuse", content=photo, headers=JPEG)
        soft = http.post(f"/classify?model=auto&{budget}", content=photo, headers=JPEG)
    assert hard.status_code == 504, hard.text
    assert "deadline passed" in hard.json()["error"]["message"]
    assert soft.status_code == 200 and "within the budget" in soft.json()["selection"]["reason"]


@pytest.mark.parametrize(
    ("query", "status", "code", "words"),
    [
        ("model=auto&latency_budget_ms=0", 422, "invalid_parameter", "greater than 0"),
        ("model=auto&latency_budget_ms=-5", 422, "invalid_parameter", "greater than 0"),
        ("model=auto&latency_budget_ms=nan", 422, "invalid_parameter", "finite"),
        ("model=auto&latency_budget_ms=inf", 422, "invalid_parameter", "finite"),
        ("model=auto&latency_budget_ms=1e12", 422, "invalid_parameter", "deadline"),
        ("model=auto&latency_budget_ms=soon", 422, "invalid_parameter", "latency_budget_ms"),
        ("model=auto&resolution=128", 422, "invalid_parameter", "chooses the resolution itself"),
        ("model=auto&min_top1=101", 422, "invalid_parameter", "min_top1"),
        ("model=auto&min_top1=nan", 422, "invalid_parameter", "finite"),
        ("model=auto&min_top1=95", 422, "min_top1_unreachable", "most accurate reaches"),
        (f"model={TV_INT8}&latency_budget_ms=50", 422, "invalid_parameter", "model=auto only"),
        ("min_top1=50", 422, "invalid_parameter", "model=auto only"),
        ("model=auto&over_budget=maybe", 422, "invalid_parameter", "over_budget"),
        (f"model={TV_INT8}&over_budget=refuse", 422, "invalid_parameter", "model=auto only"),
    ],
)
def test_bad_auto_requests_get_a_clear_json_error(
    server: ServerProcess, query: str, status: int, code: str, words: str
) -> None:
    with server.client() as http:
        response = http.post(f"/classify?{query}", content=image_bytes("owl.jpg"), headers=JPEG)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]


@pytest.mark.parametrize("endpoint", ["/embed", "/backbone", "/detect", "/segment"])
def test_auto_is_for_classify_only(server: ServerProcess, endpoint: str) -> None:
    with server.client() as http:
        response = http.post(f"{endpoint}?model=auto", content=image_bytes("owl.jpg"), headers=JPEG)
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_task"
    assert "/classify only" in response.json()["error"]["message"]


def _auto_error(server: ServerProcess) -> dict[str, str]:
    with server.client() as http:
        response = http.post("/classify?model=auto", content=image_bytes("owl.jpg"), headers=JPEG)
        info = http.get("/v1/tradeoffs")
    assert response.status_code in (404, 503)
    if info.status_code == 200:
        assert not info.json()["auto"]["available"] and info.json()["auto"]["reason"]
    return {"status": str(response.status_code), **response.json()["error"]}


def test_switched_off_auto_is_a_404_and_the_named_model_still_serves(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "auto": {"enabled": False}}
    with running_server(tmp_path_factory.mktemp("auto-off"), config) as process:
        error = _auto_error(process)
        with process.client() as http:
            named = http.post(f"/classify?model={V1_SMALL}", content=image_bytes("owl.jpg"), headers=JPEG)
    assert error["status"] == "404" and error["code"] == "auto_disabled" and "auto.enabled" in error["message"]
    assert named.status_code == 200


def test_auto_without_a_classifier_or_with_a_stale_profile_is_a_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"models": [DEEPLAB_SMALL], "default_model": DEEPLAB_SMALL}
    with running_server(tmp_path_factory.mktemp("auto-no-classifier"), config) as process:
        error = _auto_error(process)
    assert error["status"] == "503" and error["code"] == "auto_unavailable"
    assert "ImageNet classifier" in error["message"]

    store = tmp_path_factory.mktemp("store-stale-for-auto")
    shutil.copytree(STORE / V1_SMALL, store / V1_SMALL)
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    for point in profile["points"]:
        point["sha256"] = "0" * 64  # measured on other weights
    (store / PROFILE_NAME).write_text(json.dumps(profile))
    config = {"models": [V1_SMALL], "default_model": V1_SMALL}
    with running_server(tmp_path_factory.mktemp("auto-stale"), config, store) as process:
        error = _auto_error(process)
    assert error["status"] == "503" and error["code"] == "auto_unavailable"
    assert "other weights" in error["message"] and V1_SMALL in error["message"]
