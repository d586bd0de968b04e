"""Broken variants are reported by name and skipped; the rest of the store stays usable.

The store check names what no longer matches a loaded variant.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import IMAGES, MACAW, STORE, V1_SMALL, wait_until_app_ready

from service.app import create_app
from service.config import Settings
from service.store import StoreError, discover, parse_variant, verify_onnx
from service.store_watch import files_problem


def copy_variant(store: Path, name: str, source: str = V1_SMALL) -> Path:
    target = store / name
    shutil.copytree(STORE / source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["name"] = name
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def rewrite_manifest(directory: Path, **changes: object) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def broken_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    copy_variant(store, "good")
    (copy_variant(store, "no_manifest") / "manifest.json").unlink()
    (copy_variant(store, "bad_json") / "manifest.json").write_text("{not json")
    bad_crop = json.loads((STORE / V1_SMALL / "manifest.json").read_text())["preprocess"] | {"crop": "sideways"}
    rewrite_manifest(copy_variant(store, "bad_manifest"), preprocess=bad_crop)
    rewrite_manifest(copy_variant(store, "no_tasks"), tasks=None)
    rewrite_manifest(copy_variant(store, "bad_sha"), sha256="0" * 64)
    rewrite_manifest(copy_variant(store, "bad_size"), file_size=12)
    junk = copy_variant(store, "not_onnx")
    (junk / "model.onnx").write_bytes(b"this is not a protobuf" * 100)
    rewrite_manifest(
        junk,
        sha256=hashlib.sha256((junk / "model.onnx").read_bytes()).hexdigest(),
        file_size=(junk / "model.onnx").stat().st_size,
    )
    return store


def test_discover_reports_each_problem(broken_store: Path) -> None:
    entries = {entry.name: entry for entry in discover(broken_store)}
    assert entries["good"].variant is not None
    assert "missing" in entries["no_manifest"].error
    assert "not valid JSON" in entries["bad_json"].error
    assert "unknown preprocess.crop 'sideways'" in entries["bad_manifest"].error
    assert entries["no_tasks"].error.startswith("manifest.json is malformed")
    with pytest.raises(StoreError, match="sha256"):
        verify_onnx(entries["bad_sha"].variant)
    with pytest.raises(StoreError, match="bytes"):
        verify_onnx(entries["bad_size"].variant)


def test_every_real_variant_parses_and_verifies() -> None:
    for entry in discover(STORE):
        assert entry.variant is not None, entry.error
        verify_onnx(parse_variant(STORE / entry.name))


def test_app_serves_the_good_variant_and_lists_the_broken(broken_store: Path) -> None:
    settings = Settings(store=broken_store, intra_op_threads=1, default_model="good")
    with TestClient(create_app(settings)) as client:
        wait_until_app_ready(client)
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["good"]["loaded"] is True
        for name, fragment in [
            ("no_manifest", "manifest.json is missing"),
            ("bad_json", "not valid JSON"),
            ("bad_sha", "sha256"),
            ("bad_size", "bytes"),
            ("not_onnx", "ONNX Runtime cannot load"),
        ]:
            assert models[name]["loaded"] is False and models[name]["status"] == "failed"
            assert fragment in models[name]["error"], models[name]["error"]
        response = client.post(
            "/classify", content=(IMAGES / "parrot.jpg").read_bytes(), headers={"Content-Type": "image/jpeg"}
        )
        assert response.status_code == 200 and response.json()["model"] == "good"
        assert response.json()["results"][0]["predictions"][0]["class_id"] == MACAW
        broken = client.post(
            "/classify", params={"model": "bad_sha"}, content=b"x", headers={"Content-Type": "image/jpeg"}
        )
        assert broken.status_code == 503 and "sha256" in broken.json()["error"]["message"]


def test_readiness_is_503_while_loading_and_without_models(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with TestClient(create_app(Settings(store=empty))) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 10
        response = client.get("/readyz")
        while "loading" in response.text and time.monotonic() < deadline:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "no model could be loaded"
        assert client.post("/classify", content=b"x", headers={"Content-Type": "image/jpeg"}).status_code == 503


def test_store_check_names_what_no_longer_matches(tmp_path: Path) -> None:
    directory = copy_variant(tmp_path, "watched")
    loaded = parse_variant(directory)
    assert files_problem(loaded) is None
    labels = directory / "labels.txt"
    original_labels = labels.read_text()
    labels.write_text(original_labels.replace("macaw", "parrot"))
    assert files_problem(loaded) == "labels.txt differs from the one loaded"
    labels.write_text(original_labels)
    rewrite_manifest(directory, top1=99.9)
    assert files_problem(loaded) == "manifest.json differs from the one loaded"
    (directory / "manifest.json").write_text(json.dumps(loaded.manifest))
    assert files_problem(loaded) is None
    (directory / "model.onnx").write_bytes(b"\0" * loaded.file_size)
    assert "sha256" in (files_problem(loaded) or "")
    (directory / "manifest.json").unlink()
    assert files_problem(loaded) == "manifest.json is missing"
