"""`model=auto`: the most accurate trade-off point predicted to answer within a latency budget, given the load now.

The points are the frontier of the served ImageNet classifiers (frontier.py): accuracy from the store's
profile, cost timed on this host at start-up. A request's completion is predicted as the queue wait (the
work queued and running on the shared cores: each model's queue depth times its measured time per
image, over the cores) plus the point's own time. The wait counts `wait_factor` times against the
budget: it is the part of the prediction that varies.

That rule alone flaps: at a light load, the costliest point is predicted within the budget at every
arrival, yet the load may not sustain it, so the queue grows until the choice drops, drains, and grows
again. A ceiling (`Ceiling`) therefore follows the load with hysteresis: down at once when the queue
says the load outgrows the point, back up one point at a time after quiet spells of `hold_seconds`.

The budget is soft: when no point is predicted within it, the cheapest point answers. A point whose
model's queue is full is passed over while another can take the request, so that auto degrades where a
fixed model refuses. `min_top1` is a floor: points below it are never chosen.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .calibration import Timing
from .config import AutoConfig
from .errors import ServiceError
from .frontier import Profile, served_points
from .metrics import Metrics
from .store import Variant
from .tradeoffs import PROFILE_NAME, on_frontier

AUTO = "auto"
# The ceiling comes down when the predicted completion at it passes this share of the target (the default
# budget), and goes up once the next point up would stay under UP_BELOW of it: the band between is hysteresis.
DOWN_AT = 0.4
UP_BELOW = 0.2
MIN_SETTLE_SECONDS = 0.4
SMOOTHING_SECONDS = 0.2
MAX_HOLD_FACTOR = 8


@dataclass(frozen=True)
class Point:
    model: str
    resolution: int
    top1: float  # percent, from the profile
    service_ms: float  # decoding and running one image alone on one core, timed on this host


@dataclass(frozen=True)
class Choice:
    point: Point
    budget_ms: float
    wait_ms: float  # the held queue wait the choice was made with
    predicted_ms: float  # wait plus the point's own time for the request's images
    within_budget: bool

    def describe(self) -> dict[str, Any]:
        """What the response says of the choice."""
        reason = (
            "the most accurate point predicted to answer within the budget"
            if self.within_budget
            else "no point is predicted to answer within the budget: the cheapest one"
        )
        return {
            "mode": AUTO,
            "reason": reason,
            "budget_ms": self.budget_ms,
            "predicted_ms": round(self.predicted_ms, 2),
            "predicted_wait_ms": round(self.wait_ms, 2),
            "expected_top1": self.point.top1,
        }


@dataclass(frozen=True)
class Unavailable:
    """Why this server cannot serve `model=auto`, as the error a request for it gets."""

    status: int
    code: str
    reason: str

    def error(self) -> ServiceError:
        return ServiceError(self.status, self.reason, code=self.code)


class Ceiling:
    """The most accurate frontier point the load lets auto choose now: hysteresis between load and choice.

    It follows the queue wait smoothed over SMOOTHING_SECONDS, so that one burst does not move it. It
    comes down when the predicted completion at the ceiling passes DOWN_AT of the target, in proportion
    to how far it is over, then lets the items queued before the step drain before it judges again. It
    climbs one point after `hold_seconds` in which the next point up would have been predicted under
    UP_BELOW of the target (an idle spell counts). A climb undone within twice its hold was a failed probe:
    the hold before that climb doubles, up to MAX_HOLD_FACTOR times, so a load that sits between two
    points keeps to the lower one instead of trying the higher one every `hold_seconds`.
    """

    def __init__(self, costs_ms: list[float], target_ms: float, hold_seconds: float, now: float) -> None:
        self._costs = costs_ms  # each frontier point's own time, cheapest first
        self._target_ms = target_ms
        self._base_hold = hold_seconds
        self._holds = [hold_seconds] * len(costs_ms)  # before climbing from each point to the next
        self.level = len(costs_ms) - 1
        self._wait_ms = 0.0
        self._at = now
        self._settled_at = now  # the next step down waits for this
        self._quiet_since = now
        self._climbed_at = -math.inf  # into the current level

    def update(self, wait_ms: float, now: float) -> int:
        self._wait_ms += (1.0 - math.exp(-(now - self._at) / SMOOTHING_SECONDS)) * (wait_ms - self._wait_ms)
        self._at = now
        wait = self._wait_ms
        predicted = wait + self._costs[self.level]
        if predicted > DOWN_AT * self._target_ms:
            self._quiet_since = now
            if now >= self._settled_at and self.level > 0:
                self._step_down(predicted, now)
        elif self.level + 1 < len(self._costs) and wait + self._costs[self.level + 1] > UP_BELOW * self._target_ms:
            self._quiet_since = now
        else:
            self._climb(now)
        return self.level

    def _step_down(self, predicted: float, now: float) -> None:
        below = self.level - 1
        if now - self._climbed_at < 2 * self._holds[below]:
            self._holds[below] = min(self._holds[below] * 2, MAX_HOLD_FACTOR * self._base_hold)
        wanted = self._costs[self.level] * DOWN_AT * self._target_ms / predicted
        self.level = max(0, min(below, bisect.bisect_right(self._costs, wanted) - 1))
        self._settled_at = now + max(MIN_SETTLE_SECONDS, self._wait_ms / 1000.0)

    def _climb(self, now: float) -> None:
        if self.level > 0 and now - self._climbed_at >= 4 * self._holds[self.level - 1]:
            self._holds[self.level - 1] = self._base_hold  # the last climb held: the load has moved
        while self.level + 1 < len(self._costs) and now - self._quiet_since >= self._holds[self.level]:
            self._quiet_since += self._holds[self.level]
            self.level += 1
            self._climbed_at = now


# Whether a model's queue takes `count` more images now.
Admits = Callable[[str, int], bool]


class AutoSelector:
    def __init__(
        self,
        frontier: list[Point],
        config: AutoConfig,
        wait_ms: Callable[[], float],
        admits: Admits,
        cores: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.frontier = sorted(frontier, key=lambda point: point.service_ms)  # cheapest, least accurate first
        costs = [point.service_ms for point in self.frontier]
        self._ceiling = Ceiling(costs, config.default_budget_ms, config.hold_seconds, clock())
        self._clock = clock
        self._wait_ms = wait_ms
        self._admits = admits
        self._cores = cores
        self._wait_factor = config.wait_factor
        self._metrics = metrics

    def choose(self, budget_ms: float, min_top1: float | None, images: int = 1) -> Choice:
        floor = [point for point in self.frontier if min_top1 is None or point.top1 >= min_top1]
        if not floor:
            best = max(point.top1 for point in self.frontier)
            raise ServiceError(
                422,
                f"min_top1 {min_top1:g} is above every point auto can choose (the most accurate reaches {best:g})",
                code="min_top1_unreachable",
            )
        wait = self._wait_ms()
        level = self._ceiling.update(wait, self._clock())
        # Below the ceiling, or the cheapest point above the accuracy floor where the ceiling is below it.
        allowed = [point for point in floor if point.service_ms <= self.frontier[level].service_ms] or floor[:1]
        # A request's images spread over the cores: each core runs ceil(images / cores) of them in turn.
        rounds = math.ceil(images / self._cores)
        admitted = [p for p in allowed if self._admits(p.model, images)] or allowed
        fitting = [p for p in admitted if p.service_ms * rounds + self._wait_factor * wait <= budget_ms]
        point = fitting[-1] if fitting else admitted[0]
        choice = Choice(point, budget_ms, wait, wait + point.service_ms * rounds, bool(fitting))
        labels = (point.model, str(point.resolution))
        self._metrics.auto_selections.labels(*labels, "within" if fitting else "over").inc()
        self._metrics.auto_predicted.labels(*labels).observe(choice.predicted_ms / 1000.0)
        self._metrics.auto_wait.set(wait / 1000.0)
        self._metrics.auto_ceiling.set(self.frontier[level].top1)
        return choice

    def observe(self, choice: Choice, seconds: float) -> None:
        """The answered request's latency, beside its prediction in the metrics."""
        self._metrics.auto_latency.labels(choice.point.model, str(choice.point.resolution)).observe(seconds)


def build_selector(
    config: AutoConfig,
    variants: list[Variant],
    profile: Profile | None,
    timings: dict[tuple[str, int], Timing],
    wait_ms: Callable[[], float],
    admits: Admits,
    cores: int,
    metrics: Metrics,
) -> AutoSelector | Unavailable:
    """The selector over the frontier of the configured candidates, or why there is none."""
    if not config.enabled:
        return Unavailable(404, "auto_disabled", "model=auto is switched off on this server (auto.enabled)")
    if not variants:
        return Unavailable(503, "auto_unavailable", "model=auto needs an ImageNet classifier and none is loaded")
    if profile is None:
        return Unavailable(
            503, "auto_unavailable",
            f"model=auto needs the store's trade-off profile ({PROFILE_NAME}) and it has none or it is unreadable; "
            "python -m service.tradeoffs writes one",
        )  # fmt: skip
    points = [p for p in served_points(profile, variants, timings) if _is_candidate(config, p)]
    if not points:
        return Unavailable(503, "auto_unavailable", "none of auto.candidates is a served ImageNet classifier")
    usable = [p for p in points if p["top1"] is not None and p["latency_ms"] is not None]
    if not usable:
        return Unavailable(503, "auto_unavailable", _why_unusable(points))
    flags = on_frontier([p["top1"] for p in usable], [p["latency_ms"] for p in usable])
    frontier = [
        Point(p["model"], p["resolution"], p["top1"], p["latency_ms"])
        for p, on in zip(usable, flags, strict=True)
        if on
    ]
    return AutoSelector(frontier, config, wait_ms, admits, cores, metrics)


def _is_candidate(config: AutoConfig, point: dict[str, Any]) -> bool:
    if config.candidates is None:
        return True
    return point["model"] in config.candidates or f"{point['model']}@{point['resolution']}" in config.candidates


def _why_unusable(points: list[dict[str, Any]]) -> str:
    stale = sorted({p["model"] for p in points if p["profile_stale"]})
    if stale:
        return (
            f"the trade-off profile was measured on other weights than those served ({', '.join(stale)}); "
            "rerun python -m service.tradeoffs on this store"
        )
    if all(p["latency_ms"] is None for p in points):
        return "no candidate was timed on this host at start-up (calibration_seconds is 0 or too short)"
    return "the trade-off profile has no accuracy for any candidate; rerun python -m service.tradeoffs on this store"
