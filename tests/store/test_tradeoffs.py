"""The trade-off command on committed images with known labels, and the committed profile against the store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import HOTDOG, IMAGES, MACAW, REPO, STORE

from service.store import discover
from service.tradeoffs import PROFILE_NAME, imagenet_classifiers, on_frontier

LABELS = f"parrot.jpg, {MACAW}\nhot_dog.jpg, {HOTDOG}\n"


def _tradeoffs(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service.tradeoffs", *map(str, arguments)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def _every_point() -> set[tuple[str, int]]:
    return {(variant.name, resolution) for variant in imagenet_classifiers(STORE) for resolution in variant.resolutions}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    folder = tmp_path_factory.mktemp("tradeoffs")
    labels = folder / "labels.txt"
    labels.write_text(LABELS)
    out = folder / "profile.json"
    result = _tradeoffs(labels, "--images", IMAGES, "--name", "two-photos", "--out", out)
    assert result.returncode == 0, result.stderr
    return labels, json.loads(out.read_text())


def test_the_profile_names_its_set_and_command(measured: tuple[Path, dict]) -> None:
    labels, profile = measured
    assert profile["dataset"] == {
        "name": "two-photos",
        "images": 2,
        "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest(),
    }
    # The set's files are named from its own folders, so the command reruns on any machine that has the set.
    assert profile["command"] == "python -m service.tradeoffs labels.txt --images images --name two-photos"


def test_every_classifier_at_every_resolution_is_measured(measured: tuple[Path, dict]) -> None:
    points = measured[1]["points"]
    assert {(p["model"], p["resolution"]) for p in points} == _every_point()
    assert len(points) == len(_every_point()) >= 30
    for point in points:
        assert 0 <= point["top1"] <= point["top5"] <= 100
        assert point["top1"] in (0.0, 50.0, 100.0)  # two images
    # The largest models get both photos right at their native resolution.
    by_key = {(p["model"], p["resolution"]): p for p in points}
    assert by_key[("mobilenet_v1_1.0_224", 224)]["top1"] == 100.0
    assert by_key[("mobilenet_v2_1.0_224_tv", 224)]["top1"] == 100.0


def test_cost_and_frontier_follow_from_the_points(measured: tuple[Path, dict]) -> None:
    points = measured[1]["points"]
    manifests = {entry.name: entry.variant for entry in discover(STORE) if entry.variant is not None}
    for point in points:
        variant = manifests[point["model"]]
        assert point["macs"] == round(variant.macs * (point["resolution"] / variant.native_resolution) ** 2)
        assert point["alpha"] == variant.manifest["alpha"] and point["params"] == variant.manifest["params"]
        assert point["sha256"] == variant.sha256
        native = point["resolution"] == variant.native_resolution
        assert point["published_top1"] == ((variant.manifest.get("published") or {}).get("top1") if native else None)
    expected = on_frontier([p["top1"] for p in points], [p["macs"] for p in points])
    assert [p["frontier"] for p in points] == expected and any(expected)


def test_on_frontier_keeps_the_points_nothing_beats_on_both() -> None:
    # (accuracy, cost): the second is beaten by the third (more accurate and cheaper).
    assert on_frontier([70.0, 60.0, 65.0, 80.0], [100.0, 50.0, 40.0, 200.0]) == [True, False, True, True]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("parrot.jpg 88\n", "expected 'FILE, CLASS_ID'"),
        ("parrot.jpg, 1000\n", "CLASS_ID in 0..999"),
        ("missing.jpg, 88\n", "no image"),
        ("\n", "no labelled images"),
    ],
)
def test_a_bad_labels_file_is_refused_naming_what_is_wrong(tmp_path: Path, labels: str, message: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(labels)
    result = _tradeoffs(path, "--images", IMAGES, "--out", tmp_path / "profile.json")
    assert result.returncode == 2 and message in result.stderr and str(path) in result.stderr, result.stderr
    assert not (tmp_path / "profile.json").exists()


def test_the_committed_profile_covers_the_store_and_measured_its_weights() -> None:
    profile = json.loads((STORE / PROFILE_NAME).read_text())
    assert profile["dataset"]["name"] == "imagenet-val-1300" and profile["dataset"]["images"] == 1300
    assert {(p["model"], p["resolution"]) for p in profile["points"]} == _every_point()
    served = {variant.name: variant.sha256 for variant in imagenet_classifiers(STORE)}
    assert all(point["sha256"] == served[point["model"]] for point in profile["points"])
