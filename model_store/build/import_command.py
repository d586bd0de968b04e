"""`mobilenet-serve import SOURCE --name NAME --store DIR`: turn a user's model into a store entry the server loads.

    mobilenet-serve import model.onnx --name flowers --store model_store --labels labels.txt \\
        --preprocess torchvision [--resolution 224] [--replace] [--check-image photo.jpg] \\
        [--quantize int8 --calibration DIR]

SOURCE is an ONNX classifier (fp32, or int8 in QDQ form), a TFLite one (through the converter the
store's own variants are built with) or a torchvision MobileNetV2 checkpoint, .pth or .pt (through the
exporter of the store's torchvision variant; needs the `torch` extra). The entry is built in a hidden
directory of the store and proven there (it loads in ONNX Runtime as the server opens it, and gives finite outputs
for a real photo at every resolution it claims and for a batch of two) before it is moved into place,
so a failed import leaves nothing behind. Steps that take time print progress; a summary ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from service.instance import ModelSession
from service.preprocess import PreprocessSpec, prepare
from service.store import StoreError, parse_variant, verify_onnx
from service.tasks import outputs_for

from .import_quantize import calibration_images, quantize_entry
from .manifest import count_macs, count_params, sha256_of
from .onnx_import import STRIDES, Found, ImportProblem, inspect, load, rewrite
from .store_place import place
from .tflite_import import from_tflite

# PyTorch checkpoints: torch is imported only for them (torch_import.py), as it is an optional extra.
TORCH_SUFFIXES = {".pth", ".pt"}
CHECK_IMAGE = Path(__file__).resolve().parent / "check_image.jpg"
MAX_PIXELS = 40_000_000
# Sizes tried beside the native one when the graph lets height and width vary.
OTHER_RESOLUTIONS = (96, 128, 160, 192, 224, 256)
PRESETS: dict[str, dict[str, Any]] = {
    "tf": {"crop": "central_fraction", "crop_fraction": 0.875, "resize_filter": "bilinear",
           "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "layout": "NCHW", "color": "RGB"},
    "torchvision": {"crop": "resize_shorter_center_crop", "crop_fraction": 0.875, "resize_filter": "bilinear",
                    "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "layout": "NCHW",
                    "color": "RGB"},
}  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mobilenet-serve import", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the model: an .onnx, .tflite or .pth/.pt file")
    parser.add_argument("--name", required=True, help="the entry's name (its directory in the store)")
    parser.add_argument("--store", type=Path, required=True, help="the model store to write into")
    parser.add_argument("--labels", type=Path, help="class names, one per line, as many as the model has classes")
    parser.add_argument("--preprocess", choices=sorted(PRESETS), default="torchvision",
                        help="how the model's training images were normalised (default: torchvision)")  # fmt: skip
    parser.add_argument("--resolution", type=int, help="input size, where the graph does not fix it")
    parser.add_argument("--replace", action="store_true", help="replace an entry of the same name")
    parser.add_argument("--check-image", type=Path, default=CHECK_IMAGE, help="the photo the entry is proven on")
    parser.add_argument("--quantize", choices=["int8"], help="post-training quantization of an fp32 model (QDQ)")
    parser.add_argument("--calibration", type=Path, help="with --quantize: a directory of representative images")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        entry = import_model(args)
    except (ImportProblem, StoreError) as exc:
        print(f"mobilenet-serve import: {exc}", file=sys.stderr)
        return 2
    print(entry)
    return 0


def import_model(args: argparse.Namespace) -> str:
    """Build, prove and place the entry; the summary to print."""
    target = _check_destination(args.store, args.name, args.replace)
    labels = _labels(args.labels, args.source)
    calibration = _calibration(args)
    model, resolution, kind, notes = _read(args.source, args.resolution)
    found = inspect(model, str(args.source), None if labels is None else len(labels), resolution)
    if args.quantize and found.precision != "fp32":
        raise ImportProblem(f"{args.source} is already {found.precision}; --quantize takes an fp32 model")
    labels = labels or [f"class_{i}" for i in range(found.classes)]
    native = resolution or found.resolution
    assert native is not None  # inspect() refused a graph without one
    rewritten = rewrite(model, found)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".import-{args.name}-", dir=args.store))
    except OSError as exc:
        raise ImportProblem(f"the store {args.store} is not writable ({exc})") from exc
    try:
        entry = work / args.name
        entry.mkdir()
        onnx.save_model(rewritten, str(entry / "model.onnx"))
        (entry / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        if args.quantize:
            _progress(f"quantizing to int8, calibrated on {len(calibration)} images")
            quantized = quantize_entry(entry / "model.onnx", calibration, _spec(PRESETS[args.preprocess]), native)
            rewritten, found.precision = quantized.model, "int8"
            onnx.save_model(rewritten, str(entry / "model.onnx"))
            notes.append(
                f"int8: top class as fp32's on {quantized.top1_agree} of {quantized.images} calibration images"
            )
        _progress("proving the entry on a real image")
        resolutions = _prove(entry / "model.onnx", found, native, args.check_image, PRESETS[args.preprocess])
        manifest = _manifest(args, found, rewritten, entry, labels, native, resolutions, kind)
        (entry / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        variant = parse_variant(entry)
        verify_onnx(variant)
        place(entry, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _summary(args, found, manifest, notes)


def _calibration(args: argparse.Namespace) -> list[Path]:
    if args.quantize and args.calibration is None:
        raise ImportProblem("--quantize needs --calibration DIR: a directory of representative images")
    if args.calibration is not None and not args.quantize:
        raise ImportProblem("--calibration is for --quantize")
    return calibration_images(args.calibration) if args.quantize else []


def _spec(preprocess: dict[str, Any]) -> PreprocessSpec:
    return PreprocessSpec(**{**preprocess, "mean": tuple(preprocess["mean"]), "std": tuple(preprocess["std"])})


def _check_destination(store: Path, name: str, replace: bool) -> Path:
    if not name or name.startswith((".", "_")) or "/" in name or name in {"sources", "build"}:
        raise ImportProblem(f"--name {name!r} cannot name a store entry")
    if not store.is_dir():
        raise ImportProblem(f"the store {store} is not a directory")
    if not os.access(store, os.W_OK | os.X_OK):
        raise ImportProblem(f"the store {store} is not writable")
    target = store / name
    if target.exists() and not replace:
        raise ImportProblem(f"{target} exists; pass --replace to replace it")
    return target


def _labels(path: Path | None, source: Path) -> list[str] | None:
    if path is None:
        return None
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportProblem(f"the labels file {path} cannot be read: {exc}") from exc
    labels = [line for line in lines if line]
    if len(labels) < 2:
        raise ImportProblem(f"the labels file {path} names {len(labels)} class; a classifier has at least 2")
    return labels


def _read(source: Path, resolution: int | None) -> tuple[onnx.ModelProto, int | None, str, list[str]]:
    """The source as an ONNX graph; the input size where the source fixes it (a TFLite graph does, and
    torchvision trains at 224); what kind of model it was, for the manifest; notes for the summary."""
    suffix = source.suffix.lower()
    if suffix not in {".onnx", ".tflite", *TORCH_SUFFIXES}:
        raise ImportProblem(
            f"{source}: only .onnx, .tflite and .pth/.pt models can be imported by this version (see the README)"
        )
    if not source.is_file():
        raise ImportProblem(f"{source} cannot be read: no such file")
    if suffix == ".tflite":
        _progress(f"converting {source.name} from TFLite")
        model, size = from_tflite(source)
        return model, resolution or size, "a TFLite model", []
    if suffix in TORCH_SUFFIXES:
        try:
            from .torch_import import NATIVE_RESOLUTION, from_checkpoint
        except ImportError as exc:
            raise ImportProblem(
                f"{source}: a PyTorch checkpoint needs torch, the `torch` extra: "
                f"pip install 'mobilenet-serve[torch]' ({exc})"
            ) from exc
        _progress(f"converting {source.name} from a torchvision MobileNetV2 checkpoint")
        converted = from_checkpoint(source)
        kind = f"a torchvision MobileNetV2 checkpoint (width multiplier {converted.width_mult})"
        note = f"converted from {kind} with {converted.classes} classes"
        return converted.model, resolution or NATIVE_RESOLUTION, kind, [note]
    _progress(f"reading {source.name}")
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ImportProblem(f"{source} cannot be read: {exc}") from exc
    return load(data, str(source)), resolution, "an ONNX model", []


def _prove(path: Path, found: Found, native: int, image: Path, preprocess: dict[str, Any]) -> list[int]:
    """The resolutions at which the rewritten graph gives finite outputs for a real photo and a batch of two."""
    try:
        session = ModelSession(path, 1)
    except Exception as exc:
        raise ImportProblem(f"ONNX Runtime cannot run the model: {exc}") from exc
    outputs = tuple(sorted(session.output_names))
    spec = _spec(preprocess)
    photo = image.read_bytes()
    working = []
    for size in sorted({native, *OTHER_RESOLUTIONS}):
        tensor = prepare(photo, spec, size, MAX_PIXELS).tensor
        try:
            results = session.run(np.stack([tensor, tensor]), outputs)
        except Exception as exc:
            if size == native:
                raise ImportProblem(f"the model fails on a batch of two photos at {size} pixels: {exc}") from exc
            continue
        if all(np.isfinite(r).all() and r.shape[0] == 2 for r in results):
            working.append(size)
        elif size == native:
            raise ImportProblem(f"the model gives no finite answer per image for {image.name} at {size} pixels")
    return working


def _manifest(
    args: argparse.Namespace, found: Found, model: onnx.ModelProto, entry: Path, labels: list[str], native: int,
    resolutions: list[int], kind: str,
) -> dict[str, Any]:  # fmt: skip
    tasks = ["classify"] + (["embed"] if found.embedding else []) + (["backbone"] if len(found.features) == 3 else [])
    missing = {o for task in tasks for o in outputs_for(task)} - {o.name for o in model.graph.output}
    if missing:
        raise ImportProblem(f"the rewritten graph lacks {sorted(missing)}")
    onnx_path = entry / "model.onnx"
    return {
        "name": args.name, "family": "custom", "alpha": None, "native_resolution": native,
        "precision": found.precision, "label_space": f"custom:{args.name}", "tasks": tasks,
        "resolutions": resolutions, "embedding_dim": found.embedding_dim,
        "feature_strides": {str(s): found.features[s][1] for s in STRIDES} if "backbone" in tasks else None,
        "preprocess": PRESETS[args.preprocess], "onnx": "model.onnx", "labels": "labels.txt",
        "num_classes": len(labels), "params": count_params(model), "macs": count_macs(model, native),
        "file_size": onnx_path.stat().st_size, "sha256": sha256_of(onnx_path),
        "source": {"files": [{"file": args.source.name, "sha256": sha256_of(args.source)}],
                   "origin": f"mobilenet-serve import of {kind} ({found.layout} input, {found.precision})"},
    }  # fmt: skip


def _summary(args: argparse.Namespace, found: Found, manifest: dict[str, Any], notes: list[str]) -> str:
    features = ", ".join(f"s{s}: {c} channels" for s, c in (manifest["feature_strides"] or {}).items())
    return "\n".join([
        f"imported {args.source.name} as {args.store / args.name}",
        f"  input: {found.layout} float, served as NCHW; resolutions {manifest['resolutions']} "
        f"(native {manifest['native_resolution']}); any batch size",
        f"  classes: {manifest['num_classes']} ({'labels from ' + str(args.labels) if args.labels else 'numbered'})",
        f"  tasks: {', '.join(manifest['tasks'])}; embedding: {found.embedding_dim or 'not found'}; "
        f"feature maps: {features or 'not found at strides 8, 16 and 32'}",
        f"  {manifest['precision']}, {manifest['params']:,} parameters, {manifest['macs']:,} multiply-adds "
        f"at {manifest['native_resolution']}; preprocessing: {args.preprocess}",
        *(f"  {note}" for note in notes),
        "  the server loads it at its next start",
    ])  # fmt: skip


def _progress(step: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {step}...", file=sys.stderr, flush=True)
