"""`model=auto`: the most accurate trade-off point predicted to answer within a latency budget, given the load now.

The points are the frontier of the served ImageNet classifiers (frontier.py): accuracy from the store's
profile, cost timed on this host at start-up (and for the ceiling's climbs, as the points run now:
auto_costs.py). A request's completion is predicted as its queue wait beside the images every model has
queued and running, which share the cores per image (queue_wait.py), plus the point's own time. The wait
counts `wait_factor` times against the budget: it is the part of the prediction that varies.

That rule alone flaps, so a ceiling (auto_ceiling.py) bounds the choice: it comes down at once when the
backlog (the time the cores need for every image in flight) says the load outgrows it, and climbs back
while the cores have room, to a position between two points where that is what fits: the requests are
then split between the two. It is fed every SAMPLE_SECONDS (`follow_load`) besides at each auto
request, so that it sees the load of every model's requests: a spell without auto requests is quiet
only if the server was.

The budget is soft: when no point is predicted within it, the cheapest point answers. A point whose
model's queue is full is passed over while another can take the request, so that auto degrades where a
fixed model refuses. `min_top1` is a floor: points below it are never chosen.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .auto_ceiling import Ceiling, between
from .auto_costs import Live, current_costs, fresh
from .calibration import Timing
from .config import AutoConfig
from .errors import ServiceError
from .frontier import Profile, served_points
from .metrics import Metrics
from .queue_wait import Flow, backlog_ms, shared_wait_ms
from .store import Variant
from .tradeoffs import PROFILE_NAME, on_frontier

AUTO = "auto"
SAMPLE_SECONDS = 0.05


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
    wait_ms: float  # the point's predicted queue wait
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

    def over_budget(self) -> ServiceError:
        """The refusal for a request that asked for `over_budget=refuse`, where no point is within its budget."""
        point = self.point
        return ServiceError(
            429,
            f"no point is predicted to answer within the budget of {self.budget_ms:g} ms (the cheapest, "
            f"{point.model} at {point.resolution}, in {self.predicted_ms:.0f} ms); retry shortly",
            code="over_budget",
            headers={"Retry-After": str(max(1, math.ceil(self.wait_ms / 1000.0)))},
        )


@dataclass(frozen=True)
class Unavailable:
    """Why this server cannot serve `model=auto`, as the error a request for it gets."""

    status: int
    code: str
    reason: str

    def error(self) -> ServiceError:
        return ServiceError(self.status, self.reason, code=self.code)


# Whether a model's queue takes `count` more images now.
Admits = Callable[[str, int], bool]


class AutoSelector:
    def __init__(
        self,
        frontier: list[Point],
        config: AutoConfig,
        backlog: Callable[[], list[Flow]],
        live: Live,
        cpu_seconds: Callable[[], float],
        admits: Admits,
        cores: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.frontier = sorted(frontier, key=lambda point: point.service_ms)  # cheapest, least accurate first
        self._calibrated = [point.service_ms for point in self.frontier]
        self._top1 = [point.top1 for point in self.frontier]
        self._ceiling = Ceiling(self._calibrated, config.default_budget_ms, config.hold_seconds, cores, clock())
        self._clock = clock
        self._backlog = backlog
        self._live = live
        self._cpu_seconds = cpu_seconds
        self._requests = 0
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
        self._requests += 1
        now = self._clock()
        self._ceiling.arrive(now)
        flows = self._backlog()
        self._update_ceiling(backlog_ms(flows, self._cores), now)
        level = self._ceiling.pick()
        # Below the ceiling, or the cheapest point above the accuracy floor where the ceiling is below it.
        allowed = [point for point in floor if point.service_ms <= self.frontier[level].service_ms] or floor[:1]
        # A request's images spread over the cores: each core runs ceil(images / cores) of them in turn.
        rounds = math.ceil(images / self._cores)
        admitted = [p for p in allowed if self._admits(p.model, images)] or allowed
        waits = {p: shared_wait_ms(flows, self._cores, p.service_ms) for p in admitted}
        fitting = [p for p in admitted if p.service_ms * rounds + self._wait_factor * waits[p] <= budget_ms]
        point = fitting[-1] if fitting else admitted[0]
        choice = Choice(point, budget_ms, waits[point], waits[point] + point.service_ms * rounds, bool(fitting))
        labels = (point.model, str(point.resolution))
        self._metrics.auto_selections.labels(*labels, "within" if fitting else "over").inc()
        self._metrics.auto_predicted.labels(*labels).observe(choice.predicted_ms / 1000.0)
        return choice

    def follow(self) -> None:
        """Feed the ceiling the load now, between auto requests, the CPU used (too costly to read per request) and
        what the points cost as they run now."""
        observed = [fresh(self._live(point.model, point.resolution)) for point in self.frontier]
        self._ceiling.recost(current_costs(self._calibrated, observed))
        now = self._clock()
        self._metrics.auto_busy.set(self._ceiling.use(self._cpu_seconds(), self._requests, now))
        self._update_ceiling(backlog_ms(self._backlog(), self._cores), now)

    def _update_ceiling(self, wait: float, now: float) -> None:
        self._ceiling.update(wait, now)
        self._metrics.auto_wait.set(wait / 1000.0)
        self._metrics.auto_ceiling.set(between(self._top1, self._ceiling.position))

    def observe(self, choice: Choice, seconds: float) -> None:
        """The answered request's latency, beside its prediction in the metrics."""
        self._metrics.auto_latency.labels(choice.point.model, str(choice.point.resolution)).observe(seconds)


async def follow_load(selector: Callable[[], AutoSelector | Unavailable | None]) -> None:
    """Feed the current selector's ceiling every SAMPLE_SECONDS, until cancelled."""
    while True:
        auto = selector()
        if isinstance(auto, AutoSelector):
            auto.follow()
        await asyncio.sleep(SAMPLE_SECONDS)


def build_selector(
    config: AutoConfig,
    variants: list[Variant],
    profile: Profile | None,
    timings: dict[tuple[str, int], Timing],
    backlog: Callable[[], list[Flow]],
    live: Live,
    cpu_seconds: Callable[[], float],
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
    return AutoSelector(frontier, config, backlog, live, cpu_seconds, admits, cores, metrics)


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
