"""model=auto's ceiling: how far up the frontier the load lets it choose now (auto_select.py).

Choosing per request the most accurate point predicted within the budget flaps: at a light load, the
costliest point is predicted within the budget at every arrival, yet the load may not sustain it, so the
queue grows until the choice drops, drains, and grows again. The ceiling puts hysteresis between the
load and the choice.

The frontier's points are far apart in cost (a step up can add a tenth of the cores' use), so a ceiling
that stops at points wastes the room between them: at a load the next point up does not fit, every answer
would come from the one below. The ceiling is a position between points instead, and the requests are
split between its two neighbours in proportion, in turn (error diffusion: no randomness, no runs).
"""

from __future__ import annotations

import bisect
import math

from .auto_load import AutoLoad

# The ceiling comes down when the predicted completion at it passes this share of the target (the default
# budget), and climbs while the cores' use predicted at the higher position stays under UP_BELOW and under
# 1 - TAIL * (a request's cores' time) / target: a queue's wait grows with the time each request takes and
# with 1 / (1 - use), so a costlier point, or a tighter target, leaves less of the cores to use. TAIL is where
# single points stopped answering 99% within 100 ms on this project's VM (docs/benchmark-log.md, "A use limit
# that falls with a request's cost").
DOWN_AT = 0.4
UP_BELOW = 0.7
TAIL = 3.0
MIN_SETTLE_SECONDS = 0.4
SMOOTHING_SECONDS = 0.2


def between(values: list[float], position: float) -> float:
    """The mean of a split at `position` of a figure given per frontier point (cost, top-1)."""
    level = int(position)
    if level + 1 >= len(values):
        return values[-1]
    return values[level] + (position - level) * (values[level + 1] - values[level])


def position_in(costs: list[float], cost: float) -> float:
    """The highest position whose split costs no more than `cost`, given each point's cost, cheapest first."""
    if cost >= costs[-1]:
        return float(len(costs) - 1)
    level = bisect.bisect_right(costs, cost) - 1
    if level < 0:
        return 0.0
    gap = costs[level + 1] - costs[level]
    return level + ((cost - costs[level]) / gap if gap > 0 else 0.0)


def share_ms(rate: float, cores: int, target_ms: float) -> float:
    """The cores' time x each request may take at `rate` per second for the use, rate * x / cores, to stay under
    UP_BELOW and under 1 - TAIL * x / target."""
    per_core = rate / (cores * 1000.0)
    return min(UP_BELOW / per_core, 1.0 / (per_core + TAIL / target_ms))


def _mean_step(costs: list[float]) -> float:
    return (costs[-1] - costs[0]) / max(1, len(costs) - 1)


class Ceiling:
    """How far up the frontier auto may choose now: a position between points, moved by the load.

    It comes down at once when the predicted completion at it, from the queue wait smoothed over
    SMOOTHING_SECONDS, passes DOWN_AT of the target: in proportion to how far it is over, and at least one
    point; then it lets the items queued before the step drain before it judges or climbs again.

    Otherwise it climbs, by the frontier's mean step in cost per `hold_seconds` at most (one point, were the
    points evenly spread) as the points run now and as calibrated, towards the highest position at which
    the cores' use stays under its limit (`share_ms`), lower the costlier a request and the tighter the
    target. A queue forms only once the cores are nearly full, too late to tell whether a higher position
    fits, so this is judged on the share of the cores the server uses (`use`, auto_load.py): what an auto
    request costs the cores by the averages over `hold_seconds`, with the change in cost the climb would
    make, at the averaged rate of auto requests (at the start of a load, their rate as it is); a request's
    other costs (HTTP, the response) stay the same. It does not come down on the use: a use over the limit while
    the queue stays short is a load the cores carry.

    The averages lag a load that jumps (from idle to overload, say): at the top of the frontier a tenth of a
    second of such a load queues more than the budget, and the queue takes seconds to drain. So while the
    recent rate of auto requests is a multiple of the averaged one (auto_load.JUMP), the position comes down
    at once to where that rate would use the cores up to the limit, a request costing its point and what the
    averages say a request costs besides.
    """

    def __init__(self, costs_ms: list[float], target_ms: float, hold_seconds: float, cores: int, now: float) -> None:
        self.recost(costs_ms)
        self._calibrated = costs_ms
        self._calibrated_step_ms = _mean_step(costs_ms)
        self._target_ms = target_ms
        self._hold = hold_seconds
        self.load = AutoLoad(cores, hold_seconds, costs_ms[-1])
        self.position = float(len(costs_ms) - 1)
        self._carry = 0.0  # the share of the upper neighbour owed to the next requests
        self._wait_ms = 0.0
        self._at = now
        self._settled_at = now  # the next step down waits for this

    def arrive(self, now: float) -> None:
        """An auto request came."""
        self.load.arrive(now)

    def update(self, wait_ms: float, now: float) -> None:
        elapsed = max(0.0, now - self._at)
        self._wait_ms += (1.0 - math.exp(-elapsed / SMOOTHING_SECONDS)) * (wait_ms - self._wait_ms)
        self._at = now
        self._follow_a_jump(now)
        predicted = self._wait_ms + self.cost(self.position)
        if predicted > DOWN_AT * self._target_ms:
            if now >= self._settled_at and self.position > 0:
                self._step_down(predicted, now)
            return
        if now < self._settled_at:
            return
        room = self._room(now)
        if room > self.position:
            self.position = min(room, self._climbed(elapsed / self._hold))

    def recost(self, costs_ms: list[float]) -> None:
        """Each frontier point's own time, cheapest first: as calibrated, or as it runs now (auto_costs.py).

        The position stays where it is."""
        self._costs = costs_ms
        # How far the ceiling moves per hold: the frontier's mean step in cost, whatever its points' spacing.
        self._step_ms = _mean_step(costs_ms)

    def pick(self) -> int:
        """The point for the next request: the position's lower neighbour, or its upper one in proportion."""
        level = int(self.position)
        self._carry += self.position - level
        if self._carry >= 1.0 and level + 1 < len(self._costs):
            self._carry -= 1.0
            return level + 1
        return level

    def use(self, cpu_seconds: float, requests: int, now: float) -> float:
        """The server's CPU seconds and auto requests so far; returns the share of the cores in use, averaged."""
        return self.load.use(cpu_seconds, requests, self.cost(self.position), now)

    def cost(self, position: float) -> float:
        """The mean own time per request of the split at `position`."""
        return between(self._costs, position)

    def _position_of(self, cost: float) -> float:
        return position_in(self._costs, cost)

    def _climbed(self, holds: float) -> float:
        """Where `holds` holds of climbing may take the position: the frontier's mean step in cost per hold, in the
        costs as the points run now and as calibrated. On the former alone, points that run at the same cost now
        were crossed at once, on a few percent in their times."""
        by_now = self._position_of(self.cost(self.position) + self._step_ms * holds)
        calibrated = self._calibrated
        by_calibration = position_in(calibrated, between(calibrated, self.position) + self._calibrated_step_ms * holds)
        return min(by_now, by_calibration)

    def _room(self, now: float) -> float:
        """The highest position at which the cores' use is predicted under its limit."""
        load = self.load
        if load.rate <= 0.0:  # no request lately
            return float(len(self._costs) - 1)
        # The averaged use still counts what came before a step down: so does the averaged cost, but a use
        # near the cores' limit does not fall in proportion to the cost, so after a step down the current
        # cost is the one to climb from. At the start of a load the averaged use and rate are both a fraction
        # of what they will be: until the averaged rate has caught up, the rate is the one as it is.
        rate = load.rate_now(now)
        cost = min(load.cost_ms, self.cost(self.position))
        affordable = cost + self._share_ms(rate) - load.per_request_ms()
        return self._position_of(affordable)

    def _follow_a_jump(self, now: float) -> None:
        """Down to where a load that jumps fits, before its queue shows it."""
        rate = self.load.jumped(now)
        if rate is None:
            return
        fits = self._position_of(self._share_ms(rate) - self.load.other_ms)
        if fits < self.position:
            self.position = fits
            self._settled_at = max(self._settled_at, now + MIN_SETTLE_SECONDS)

    def _share_ms(self, rate: float) -> float:
        return share_ms(rate, self.load.cores, self._target_ms)

    def _step_down(self, predicted: float, now: float) -> None:
        wanted = self.cost(self.position) * DOWN_AT * self._target_ms / predicted
        self.position = max(0.0, min(self.position - 1.0, self._position_of(wanted)))
        self._settled_at = now + max(MIN_SETTLE_SECONDS, self._wait_ms / 1000.0)
