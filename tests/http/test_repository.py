"""Loading and unloading models while serving (Triton's repository extension and --model-control-mode), on real servers.

A user's fine-tuned model (tests/finetune.py) is imported into a copy of part of the store, loaded through
the API while other traffic runs, replaced by a retrained version under its own traffic without a failed
request, and unloaded; a load that fails leaves the previous version serving; poll mode follows the store.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from finetune import FineTuned, fine_tune, write
from harness import REPO, STORE, ServerProcess, running_server, start_server
from support import V1_SMALL, image_bytes, metric_samples, metric_value

NAME = "pets4"
JPEG = {"content-type": "image/jpeg"}


def _import(tuned: FineTuned, store: Path, workdir: Path, labels: list[str] | None = None) -> None:
    model, labels_file = write(tuned, workdir)
    if labels is not None:
        labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "service.cli", "import", str(model), "--name", NAME, "--store", str(store),
               "--labels", str(labels_file), "--replace"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copytree(STORE / V1_SMALL, store / V1_SMALL)
    return store


class Traffic:
    """Clients that classify in a loop until stopped; every status they got, per model."""

    def __init__(self, url: str, targets: dict[str, bytes]) -> None:
        self.statuses: dict[str, Counter[int]] = {model: Counter() for model in targets}
        self.labels: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(url, m, b)) for m, b in targets.items()]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, url: str, model: str, body: bytes) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not self._stop.is_set():
                response = http.post(f"/classify?model={model}&top_k=1", content=body, headers=JPEG)
                self.statuses[model][response.status_code] += 1
                if response.status_code == 200 and model == NAME:
                    self.labels.append(response.json()["results"][0]["predictions"][0]["label"])


@pytest.fixture(scope="module")
def tuned() -> FineTuned:
    return fine_tune()


@pytest.fixture()
def explicit(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    store = _store(tmp_path)
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "model_control_mode": "explicit"}
    with running_server(tmp_path / "server", config, store) as server:
        yield server, store


def test_a_model_is_loaded_replaced_under_load_and_unloaded_without_a_failed_request(
    explicit: tuple[ServerProcess, Path], tuned: FineTuned, tmp_path: Path
) -> None:
    server, store = explicit
    with server.client() as http:
        assert http.post(f"/v2/repository/models/{NAME}/load").status_code == 400  # not in the store yet
        _import(tuned, store, tmp_path / "v1")
        index = {e["name"]: e for e in http.post("/v2/repository/index").json()}
        assert index[NAME]["state"] == "UNAVAILABLE" and index[V1_SMALL]["state"] == "READY"
        with Traffic(server.url, {V1_SMALL: image_bytes("owl.jpg")}) as others:
            time.sleep(0.3)
            assert http.post(f"/v2/repository/models/{NAME}/load").json() == {}
            time.sleep(0.5)
        answers = [
            http.post("/classify?top_k=1&model=" + NAME, content=j, headers=JPEG).json() for j, _ in tuned.held_out
        ]
        assert [a["results"][0]["predictions"][0]["label"] for a in answers] == [
            tuned.labels[i] for _, i in tuned.held_out
        ]
        assert set(others.statuses[V1_SMALL]) == {200}

        # A retrained version with other label names, loaded while both models take requests.
        retrained = fine_tune(seed=1)
        _import(retrained, store, tmp_path / "v2", labels=[label.upper() for label in retrained.labels])
        with Traffic(server.url, {V1_SMALL: image_bytes("owl.jpg"), NAME: tuned.held_out[0][0]}) as traffic:
            time.sleep(0.3)
            assert http.post(f"/v2/repository/models/{NAME}/load").json() == {}
            time.sleep(0.5)
        assert {model: set(counts) for model, counts in traffic.statuses.items()} == {V1_SMALL: {200}, NAME: {200}}
        assert traffic.labels[0] == "cat" and traffic.labels[-1] == "CAT"  # the old version, then the new
        assert http.get("/readyz").status_code == 200

        with Traffic(server.url, {V1_SMALL: image_bytes("owl.jpg")}) as others:
            time.sleep(0.3)
            assert http.post(f"/v2/repository/models/{NAME}/unload").json() == {}
            time.sleep(0.3)
        assert set(others.statuses[V1_SMALL]) == {200}
        gone = http.post(f"/classify?model={NAME}", content=tuned.held_out[0][0], headers=JPEG)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_model"
        index = {e["name"]: e for e in http.post("/v2/repository/index").json()}
        ready = [e["name"] for e in http.post("/v2/repository/index", json={"ready": True}).json()]
        metrics = http.get("/metrics").text
    assert index[NAME] == {"name": NAME, "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"}
    assert ready == [V1_SMALL]
    assert NAME not in {labels["model"] for labels, _ in metric_samples(metrics)["mobilenet_model_loaded"]}
    assert metric_value(metrics, "mobilenet_model_loaded", model=V1_SMALL) == 1


def test_a_failed_load_is_reported_and_the_previous_version_keeps_serving(
    explicit: tuple[ServerProcess, Path], tuned: FineTuned, tmp_path: Path
) -> None:
    server, store = explicit
    _import(tuned, store, tmp_path)
    with server.client() as http:
        assert http.post(f"/v2/repository/models/{NAME}/load").status_code == 200
        (store / NAME / "model.onnx").write_bytes(b"not a graph")
        failed = http.post(f"/v2/repository/models/{NAME}/load")
        still = http.post(f"/classify?model={NAME}&top_k=1", content=tuned.held_out[0][0], headers=JPEG)
        info = http.get(f"/v1/models/{NAME}").json()
        index = {e["name"]: e for e in http.post("/v2/repository/index").json()}
    assert failed.status_code == 400 and "failed to load 'pets4'" in failed.json()["error"]
    assert "bytes, the manifest says" in failed.json()["error"]
    assert still.status_code == 200 and still.json()["results"][0]["predictions"][0]["label"] == "cat"
    assert info["status"] == "loaded" and "manifest says" in info["error"]
    assert index[NAME]["state"] == "READY" and "previous load failed" in index[NAME]["reason"]


@pytest.mark.parametrize(
    ("path", "words"),
    [("/v2/repository/models/x/load", "not allowed when model_control_mode is 'none'"),
     ("/v2/repository/models/x/unload", "not allowed")],
)  # fmt: skip
def test_without_model_control_load_and_unload_are_refused(server: ServerProcess, path: str, words: str) -> None:
    with server.client() as http:
        response = http.post(path)
        index = http.post("/v2/repository/index")
    assert response.status_code == 400 and words in response.json()["error"]
    assert index.status_code == 200 and any(e["state"] == "READY" for e in index.json())


def test_a_server_whose_models_all_failed_at_start_becomes_ready_with_a_load(tmp_path: Path) -> None:
    store = _store(tmp_path)
    onnx_file = store / V1_SMALL / "model.onnx"
    good = onnx_file.read_bytes()
    onnx_file.write_bytes(good[: len(good) // 2])  # a copy cut short
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "model_control_mode": "explicit"}
    server = start_server(tmp_path / "server", config, store=store, wait_ready=False)
    try:
        with server.client() as http:
            server.log_once("loaded 0 models", timeout=60)
            not_ready = http.get("/readyz")
            onnx_file.write_bytes(good)
            loaded = http.post(f"/v2/repository/models/{V1_SMALL}/load")
            ready = http.get("/readyz")
            answer = http.post("/classify", content=image_bytes("owl.jpg"), headers=JPEG)
    finally:
        server.stop()
    assert not_ready.status_code == 503
    assert loaded.status_code == 200 and ready.status_code == 200 and answer.status_code == 200


def test_bad_index_requests_get_a_v2_error(explicit: tuple[ServerProcess, Path]) -> None:
    server, _ = explicit
    with server.client() as http:
        for body in (b"{", b"[1]", b'{"ready": "yes"}'):
            response = http.post("/v2/repository/index", content=body)
            assert response.status_code == 400 and "index request body" in response.json()["error"]


def test_poll_mode_follows_the_store(tmp_path: Path, tuned: FineTuned) -> None:
    store = _store(tmp_path)
    config = {"models": None, "default_model": V1_SMALL, "model_control_mode": "poll", "repository_poll_seconds": 0.3}
    with running_server(tmp_path / "server", config, store) as server, server.client() as http:
        explicit_load = http.post(f"/v2/repository/models/{NAME}/load")
        _import(tuned, store, tmp_path / "v1")
        first = _wait_for_label(http, tuned, "cat")
        _import(tuned, store, tmp_path / "v2", labels=["Cat", "Parrot", "Hot dog", "Sunflower"])
        second = _wait_for_label(http, tuned, "Cat")
        shutil.rmtree(store / NAME)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and http.get(f"/v1/models/{NAME}").json()["status"] == "loaded":
            time.sleep(0.2)
        status = http.get(f"/v1/models/{NAME}").json()["status"]
        while time.monotonic() < deadline and f"model {NAME} unloaded" not in server.log_text():
            time.sleep(0.1)  # the line follows the status change
        log = server.log_text()
    assert explicit_load.status_code == 400 and "'poll'" in explicit_load.json()["error"]
    assert first and second and status == "not_configured"
    assert f"model {NAME} loaded" in log and f"model {NAME} reloaded" in log and f"model {NAME} unloaded" in log


def _wait_for_label(http: httpx.Client, tuned: FineTuned, label: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = http.post(f"/classify?model={NAME}&top_k=1", content=tuned.held_out[0][0], headers=JPEG)
        if response.status_code == 200 and response.json()["results"][0]["predictions"][0]["label"] == label:
            return True
        time.sleep(0.2)
    return False


def test_an_admin_key_guards_model_control_and_only_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "model_control_mode": "explicit",
              "api_key": "user-key", "admin_api_key": "admin-key"}  # fmt: skip
    with running_server(tmp_path / "server", config, store) as server, server.client() as http:
        as_user = http.post(f"/v2/repository/models/{V1_SMALL}/unload", headers={"X-API-Key": "user-key"})
        inference_as_admin = http.post("/classify", content=image_bytes("owl.jpg"),
                                       headers={**JPEG, "X-API-Key": "admin-key"})  # fmt: skip
        inference = http.post("/classify", content=image_bytes("owl.jpg"), headers={**JPEG, "X-API-Key": "user-key"})
        as_admin = http.post(f"/v2/repository/models/{V1_SMALL}/unload", headers={"Authorization": "Bearer admin-key"})
    assert as_user.status_code == 401 and "admin API key" in as_user.json()["error"]
    assert inference_as_admin.status_code == 401 and inference.status_code == 200
    assert as_admin.status_code == 200
