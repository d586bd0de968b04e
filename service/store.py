"""Read the model store: parse each variant's manifest and verify its ONNX file against it."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .preprocess import MEDIAPIPE_CROPS, PreprocessSpec
from .ssd import DetectorSpec, parse_detector
from .tasks import MANIFEST_TASKS

log = logging.getLogger("mobilenet_serve.store")

# Directories of the store that hold no variant (see model_store/README.md).
NON_VARIANT_DIRS = {"sources", "build", "__pycache__"}
CROP_MODES = {"central_fraction", "resize_shorter_center_crop", "none", *MEDIAPIPE_CROPS}


class StoreError(Exception):
    """A variant that cannot be served; the message says what is wrong with it."""


@dataclass(frozen=True)
class Variant:
    name: str
    directory: Path
    native_resolution: int
    resolutions: tuple[int, ...]
    tasks: frozenset[str]
    label_space: str
    labels: tuple[str, ...]
    embedding_dim: int | None
    feature_strides: dict[str, int] | None
    preprocess: PreprocessSpec
    onnx_path: Path
    file_size: int
    sha256: str
    macs: int | None  # multiply-adds of one image at the native resolution, where the manifest states them
    manifest: dict[str, Any] = field(repr=False, compare=False)
    detector: DetectorSpec | None = field(default=None, repr=False, compare=False)  # an SSD head's decoding

    def macs_at(self, resolution: int) -> int | None:
        """Multiply-adds of one image at `resolution`: a convolutional network's cost grows with the input's area."""
        if self.macs is None:
            return None
        return round(self.macs * (resolution / self.native_resolution) ** 2)


@dataclass
class StoreEntry:
    """One directory of the store: a parsed variant, or the reason it could not be parsed."""

    name: str
    variant: Variant | None
    error: str | None = None


def discover(store: Path) -> list[StoreEntry]:
    """Every variant directory of the store, sorted by name; broken ones carry an error."""
    if not store.is_dir():
        raise StoreError(f"model store {store} is not a directory")
    entries = []
    for directory in sorted(p for p in store.iterdir() if p.is_dir()):
        if directory.name in NON_VARIANT_DIRS or directory.name.startswith((".", "_")):
            continue
        try:
            entries.append(StoreEntry(directory.name, parse_variant(directory)))
        except StoreError as exc:
            log.error("variant %s skipped: %s", directory.name, exc)
            entries.append(StoreEntry(directory.name, None, str(exc)))
    return entries


def parse_variant(directory: Path) -> Variant:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise StoreError("manifest.json is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise StoreError("manifest.json is not a JSON object")
    try:
        return _variant_from_manifest(directory, manifest)
    except KeyError as exc:
        raise StoreError(f"manifest.json is malformed: missing key {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise StoreError(f"manifest.json is malformed: {exc}") from exc


def _variant_from_manifest(directory: Path, manifest: dict[str, Any]) -> Variant:
    if manifest["name"] != directory.name:
        raise ValueError(f"name {manifest['name']!r} differs from the directory name")
    pre = manifest["preprocess"]
    spec = PreprocessSpec(
        crop=str(pre["crop"]),
        crop_fraction=float(pre.get("crop_fraction") or 1.0),
        resize_filter=str(pre["resize_filter"]),
        mean=_triple(pre["mean"]),
        std=_triple(pre["std"]),
        layout=str(pre["layout"]),
        color=str(pre["color"]),
    )
    if spec.crop not in CROP_MODES:
        raise ValueError(f"unknown preprocess.crop {spec.crop!r}")
    if spec.layout != "NCHW" or spec.color != "RGB":
        raise ValueError(f"unsupported layout/color {spec.layout}/{spec.color}")
    if not 0.0 < spec.crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction {spec.crop_fraction} outside (0, 1]")
    tasks = frozenset(manifest["tasks"])
    if not tasks or not tasks <= MANIFEST_TASKS:
        raise ValueError(f"tasks {sorted(tasks)} are not a subset of {sorted(MANIFEST_TASKS)}")
    resolutions = tuple(sorted(int(r) for r in manifest["resolutions"]))
    native = int(manifest["native_resolution"])
    if native not in resolutions:
        raise ValueError(f"native_resolution {native} not among resolutions {list(resolutions)}")
    labels_path = directory / str(manifest["labels"])
    try:
        labels = tuple(labels_path.read_text(encoding="utf-8").splitlines())
    except OSError as exc:
        raise ValueError(f"labels file unreadable: {exc}") from exc
    if len(labels) != int(manifest["num_classes"]):
        raise ValueError(f"{labels_path.name} has {len(labels)} lines, num_classes is {manifest['num_classes']}")
    strides = manifest.get("feature_strides")
    detector = None if manifest.get("detector") is None else parse_detector(manifest["detector"])
    if "face_detect" in tasks and detector is None:
        raise ValueError("a face_detect variant needs its detector section")
    return Variant(
        name=manifest["name"],
        directory=directory,
        native_resolution=native,
        resolutions=resolutions,
        tasks=tasks,
        label_space=str(manifest["label_space"]),
        labels=labels,
        embedding_dim=None if manifest.get("embedding_dim") is None else int(manifest["embedding_dim"]),
        feature_strides=None if strides is None else {str(k): int(v) for k, v in strides.items()},
        preprocess=spec,
        onnx_path=directory / str(manifest["onnx"]),
        file_size=int(manifest["file_size"]),
        sha256=str(manifest["sha256"]).lower(),
        macs=None if manifest.get("macs") is None else int(manifest["macs"]),
        manifest=manifest,
        detector=detector,
    )


def _triple(values: Any) -> tuple[float, float, float]:
    floats = tuple(float(v) for v in values)
    if len(floats) != 3:
        raise ValueError(f"expected 3 per-channel values, got {len(floats)}")
    return floats  # type: ignore[return-value]


def verify_onnx(variant: Variant) -> None:
    """Refuse an ONNX file whose size or sha256 differs from the manifest."""
    path = variant.onnx_path
    if not path.is_file():
        raise StoreError(f"{path.name} is missing")
    size = path.stat().st_size
    if size != variant.file_size:
        raise StoreError(f"{path.name} is {size} bytes, the manifest says {variant.file_size}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != variant.sha256:
        raise StoreError(f"{path.name} sha256 {digest.hexdigest()} does not match the manifest's {variant.sha256}")
