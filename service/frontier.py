"""The trade-off points this server offers: the store profile's accuracy beside this host's latency.

The profile (`tradeoffs.json`, written by `python -m service.tradeoffs`) says what each (model,
resolution) gets right on a labelled set; the calibration (calibration.py) says what it costs here. A
point is on the frontier when no other served point is both more accurate and faster on this host. A
figure measured on other weights than those served (their sha256 differs) is stale: it is not used.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .calibration import Timing
from .store import Variant
from .tradeoffs import PROFILE_NAME, on_frontier


class Dataset(BaseModel):
    name: str
    images: int
    labels_sha256: str


class ProfilePoint(BaseModel):
    model: str
    resolution: int
    top1: float
    top5: float
    published_top1: float | None = None
    sha256: str | None = None  # of the ONNX file measured


class Profile(BaseModel):
    dataset: Dataset
    command: str
    points: list[ProfilePoint]


def load_profile(store: Path) -> Profile | None:
    """The store's profile, None where it has none; a ValueError saying what is wrong with a broken one."""
    path = store / PROFILE_NAME
    if not path.is_file():
        return None
    try:
        return Profile.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(f"{path} is not a trade-off profile: {exc}") from exc


def served_points(
    profile: Profile, variants: list[Variant], timings: dict[tuple[str, int], Timing]
) -> list[dict[str, Any]]:
    """Every resolution of every served classifier: its accuracy from the profile, its cost here."""
    measured = {(point.model, point.resolution): point for point in profile.points}
    points: list[dict[str, Any]] = []
    ranked: list[tuple[int, float, float]] = []  # index, top-1, latency of the points with both
    for variant in variants:
        for resolution in variant.resolutions:
            accuracy = measured.get((variant.name, resolution))
            stale = accuracy is not None and accuracy.sha256 is not None and accuracy.sha256 != variant.sha256
            accuracy = None if stale else accuracy
            timing = timings.get((variant.name, resolution))
            if accuracy is not None and timing is not None:
                ranked.append((len(points), accuracy.top1, timing.latency_ms))
            points.append(
                {
                    "model": variant.name,
                    "resolution": resolution,
                    "alpha": variant.manifest.get("alpha"),
                    "macs": variant.macs_at(resolution),
                    "params": variant.manifest.get("params"),
                    "top1": None if accuracy is None else accuracy.top1,
                    "top5": None if accuracy is None else accuracy.top5,
                    "published_top1": None if accuracy is None else accuracy.published_top1,
                    "latency_ms": None if timing is None else round(timing.latency_ms, 3),
                    "timing": None if timing is None else asdict(timing),
                    "profile_stale": stale,
                    "frontier": False,
                }
            )
    flags = on_frontier([top1 for _, top1, _ in ranked], [latency for _, _, latency in ranked])
    for (index, _, _), flag in zip(ranked, flags, strict=True):
        points[index]["frontier"] = flag
    return points
