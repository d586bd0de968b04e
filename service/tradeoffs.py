"""The width x resolution trade-off: top-1 and top-5 of every ImageNet classifier at every resolution it accepts.

    python -m service.tradeoffs LABELS --images DIR [--name NAME] [--store DIR] [--out FILE]
    python -m service.tradeoffs --show FILE

LABELS is an ImageNet-style labels file, one `FILE, CLASS_ID` per line (CLASS_ID in 0..999, the store's
ImageNet-1k ids), naming images in DIR. Each image goes through the service's own preprocessing and
ONNX Runtime session, as `/classify` runs it. The profile written to FILE (default: the store's
`tradeoffs.json`) names the set it came from (name, image count, sha256 of the labels file) and the
command, and gives each point its accuracy, multiply-adds and parameters, whether it is on the Pareto
frontier of accuracy against multiply-adds, and the published accuracy where the manifest states one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .preprocess import prepare
from .runtime import INPUT_NAME, open_session
from .store import Variant, discover
from .tasks import IMAGENET

BATCH = 32
MAX_PIXELS = 40_000_000
PROFILE_NAME = "tradeoffs.json"


@dataclass(frozen=True)
class Point:
    model: str
    resolution: int
    alpha: float | None
    macs: int | None  # at this resolution
    params: int | None
    top1: float  # percent
    top5: float
    frontier: bool  # no other point is both more accurate (top-1) and has fewer multiply-adds
    published_top1: float | None  # the manifest's published figure, at the native resolution only
    sha256: str  # of the ONNX file measured, so that a server can tell a figure of other weights


class LabelsError(ValueError):
    pass


def read_labels(path: Path, images: Path) -> list[tuple[Path, int]]:
    """The (image, class id) pairs of a labels file; a clear error naming the line for anything else."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, class_id = line.partition(",")
        if not class_id.strip().isdigit() or not 0 <= int(class_id) < 1000:
            raise LabelsError(f"{path}:{number}: expected 'FILE, CLASS_ID' with CLASS_ID in 0..999, got {line!r}")
        image = images / name.strip()
        if not image.is_file():
            raise LabelsError(f"{path}:{number}: no image {image}")
        pairs.append((image, int(class_id)))
    if not pairs:
        raise LabelsError(f"{path}: no labelled images")
    return pairs


def is_imagenet_classifier(variant: Variant) -> bool:
    """Whether a variant is one of the trade-off points: it classifies into the ImageNet-1k classes."""
    return "classify" in variant.tasks and variant.label_space == IMAGENET


def imagenet_classifiers(store: Path) -> list[Variant]:
    return [
        entry.variant
        for entry in discover(store)
        if entry.variant is not None and is_imagenet_classifier(entry.variant)
    ]


def accuracy(variant: Variant, resolution: int, pairs: list[tuple[Path, int]]) -> tuple[float, float]:
    """Top-1 and top-5 in percent of one variant at one resolution."""
    session = open_session(variant.onnx_path, 1)
    hits1 = hits5 = 0
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        batch = np.stack(
            [prepare(path.read_bytes(), variant.preprocess, resolution, MAX_PIXELS).tensor for path, _ in chunk]
        )
        logits = session.run(["logits"], {INPUT_NAME: batch})[0]
        top5 = np.argsort(-logits, axis=1)[:, :5]
        truth = np.array([class_id for _, class_id in chunk])
        hits1 += int((top5[:, 0] == truth).sum())
        hits5 += int((top5 == truth[:, None]).any(axis=1).sum())
    return 100.0 * hits1 / len(pairs), 100.0 * hits5 / len(pairs)


def on_frontier(accuracies: list[float], costs: list[float]) -> list[bool]:
    """For each point, whether no other point is both more accurate and cheaper."""
    return [
        not any(a > accuracy and c < cost for a, c in zip(accuracies, costs, strict=True))
        for accuracy, cost in zip(accuracies, costs, strict=True)
    ]


def measure(store: Path, pairs: list[tuple[Path, int]], log: bool = True) -> list[Point]:
    measured = []
    for variant in imagenet_classifiers(store):
        for resolution in variant.resolutions:
            started = time.perf_counter()
            top1, top5 = accuracy(variant, resolution, pairs)
            if log:
                print(f"{variant.name} at {resolution}: top-1 {top1:.2f}%, top-5 {top5:.2f}% "
                      f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)  # fmt: skip
            measured.append((variant, resolution, top1, top5))
    macs = [variant.macs_at(resolution) for variant, resolution, _, _ in measured]
    frontier = on_frontier([top1 for _, _, top1, _ in measured], [float(m or 0) for m in macs])
    return [
        Point(
            variant.name,
            resolution,
            variant.manifest.get("alpha"),
            cost,
            variant.manifest.get("params"),
            round(top1, 2),
            round(top5, 2),
            flag,
            (variant.manifest.get("published") or {}).get("top1") if resolution == variant.native_resolution else None,
            variant.sha256,
        )
        for (variant, resolution, top1, top5), cost, flag in zip(measured, macs, frontier, strict=True)
    ]


def profile(points: list[Point], labels: Path, images: int, name: str, command: str) -> dict[str, object]:
    return {
        "dataset": {"name": name, "images": images, "labels_sha256": hashlib.sha256(labels.read_bytes()).hexdigest()},
        "command": command,
        "points": [asdict(point) for point in points],
    }


def markdown(document: dict[str, Any]) -> str:
    """A profile as the README's table: one row per point, by model and resolution."""
    dataset = document["dataset"]
    lines = [
        f"{dataset['name']}, {dataset['images']} images (labels sha256 {dataset['labels_sha256'][:12]}...); "
        f"`{document['command']}`",
        "",
        "| model | α | resolution | MMACs | params (M) | top-1 % | top-5 % | frontier | published top-1 % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |",
    ]
    for point in document["points"]:
        published = "" if point["published_top1"] is None else f"{point['published_top1']} (published)"
        lines.append(
            f"| {point['model']} | {point['alpha']} | {point['resolution']} | {point['macs'] / 1e6:.0f} "
            f"| {point['params'] / 1e6:.2f} | {point['top1']:.2f} | {point['top5']:.2f} "
            f"| {'yes' if point['frontier'] else ''} | {published} |"
        )
    return "\n".join(lines)


def recorded_command(labels: Path, images: Path, name: str) -> str:
    """The command as it reruns anywhere: the set's files named from the set's own folder, not this machine's."""
    folder = images.resolve()
    where = labels.resolve()
    shown = f"{folder.name}/{where.relative_to(folder)}" if where.is_relative_to(folder) else where.name
    words = ["python -m service.tradeoffs", shlex.quote(shown)]
    if where.parent != folder:
        words += ["--images", shlex.quote(folder.name)]
    return " ".join([*words, "--name", shlex.quote(name)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labels", type=Path, nargs="?")
    parser.add_argument("--show", type=Path, help="print a profile as a Markdown table, and measure nothing")
    parser.add_argument("--images", type=Path, help="folder of the images (default: the labels file's)")
    parser.add_argument("--name", help="the set's name in the profile (default: the images folder's)")
    parser.add_argument("--store", type=Path, default=Path(__file__).resolve().parent.parent / "model_store")
    parser.add_argument("--out", type=Path, help=f"profile to write (default: the store's {PROFILE_NAME})")
    args = parser.parse_args(argv)
    if args.show is not None:
        print(markdown(json.loads(args.show.read_text(encoding="utf-8"))))
        return
    if args.labels is None:
        parser.error("a labels file is needed to measure")
    images = args.images or args.labels.parent
    try:
        pairs = read_labels(args.labels, images)
    except (LabelsError, OSError) as exc:
        parser.exit(2, f"mobilenet-serve tradeoffs: {exc}\n")
    points = measure(args.store, pairs)
    name = args.name or images.resolve().name
    document = profile(points, args.labels, len(pairs), name, recorded_command(args.labels, images, name))
    out = args.out or args.store / PROFILE_NAME
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"{len(points)} points from {len(pairs)} images written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
