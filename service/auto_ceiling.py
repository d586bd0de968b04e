"""model=auto's ceiling: the most accurate frontier point the load lets it choose now (auto_select.py).

Choosing per request the most accurate point predicted within the budget flaps: at a light load, the
costliest point is predicted within the budget at every arrival, yet the load may not sustain it, so the
queue grows until the choice drops, drains, and grows again. The ceiling puts hysteresis between the
load and the choice.
"""

from __future__ import annotations

import bisect
import math

# The ceiling comes down when the predicted completion at it passes this share of the target (the default
# budget), and goes up once the next point up would keep the cores' use under UP_BELOW: the band between,
# where neither holds, is hysteresis.
DOWN_AT = 0.4
UP_BELOW = 0.7
MIN_SETTLE_SECONDS = 0.4
SMOOTHING_SECONDS = 0.2
MAX_HOLD_FACTOR = 8


class Ceiling:
    """The most accurate frontier point the load lets auto choose now: hysteresis between load and choice.

    It follows the queue wait smoothed over SMOOTHING_SECONDS, so that one burst does not move it. It
    comes down when the predicted completion at the ceiling passes DOWN_AT of the target, in proportion
    to how far it is over, then lets the items queued before the step drain before it judges again.

    A queue forms only once the cores are nearly full, too late to tell whether the next point up would
    fit: the climb is judged on the share of the cores the server uses (`use`), averaged over
    `hold_seconds`. The next point up adds its extra time per image, over the current point's, at the
    rate auto requests arrive; a request's other costs (HTTP, the response) stay the same. It climbs one
    point after `hold_seconds` in which that sum stayed under UP_BELOW and the queue under DOWN_AT (an idle
    spell counts). A climb undone within twice its hold was a failed probe:
    the hold before that climb doubles, up to MAX_HOLD_FACTOR times, so a load that sits between two
    points keeps to the lower one instead of trying the higher one every `hold_seconds`.
    """

    def __init__(self, costs_ms: list[float], target_ms: float, hold_seconds: float, cores: int, now: float) -> None:
        self._costs = costs_ms  # each frontier point's own time, cheapest first
        self._target_ms = target_ms
        self._cores = cores
        self._base_hold = hold_seconds
        self._busy = 0.0  # the share of the cores in use, averaged over hold_seconds
        self._rate = 0.0  # auto requests per second, averaged likewise
        self._counters: tuple[float, int, float] | None = None  # CPU seconds, requests, when: at the last `use`
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
        elif self.level + 1 < len(self._costs) and self._busy_at(self.level + 1) > UP_BELOW:
            self._quiet_since = now
        else:
            self._climb(now)
        return self.level

    def use(self, cpu_seconds: float, requests: int, now: float) -> float:
        """The server's CPU seconds and auto requests so far: their rates, averaged over hold_seconds.

        Returns the averaged share of the cores in use."""
        if self._counters is None:  # the CPU the server used before (loading, calibrating) is no load
            self._counters = (cpu_seconds, requests, now)
            return self._busy
        last_cpu, last_requests, at = self._counters
        elapsed = now - at
        if elapsed <= 0:
            return self._busy
        weight = 1.0 - math.exp(-elapsed / self._base_hold)
        self._busy += weight * ((cpu_seconds - last_cpu) / elapsed / self._cores - self._busy)
        self._rate += weight * ((requests - last_requests) / elapsed - self._rate)
        self._counters = (cpu_seconds, requests, now)
        return self._busy

    def _busy_at(self, level: int) -> float:
        """The share of the cores in use predicted if auto's requests went to `level` instead."""
        extra_ms = self._costs[level] - self._costs[self.level]
        return self._busy + self._rate * extra_ms / 1000.0 / self._cores

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
