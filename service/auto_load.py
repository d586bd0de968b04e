"""What model=auto's ceiling judges the load on (auto_ceiling.py): the cores' use and the rate of auto requests.

The use, the rate and the cost per request of the ceiling's position are averaged over a hold: a load that
fluctuates should not move the ceiling. What a request costs the cores, the averaged use over the averaged
rate, lags less, as both lag alike; but at the start of a load the averaged use still holds what the server
did before. The rate is also counted as it is, over the last hold and over the last RATE_WINDOW_SECONDS,
from the first request in each: a load that starts is measured within a few requests, and the averages lag
it.
"""

from __future__ import annotations

import math
from collections import deque

# A load that jumps: the rate of the auto requests of the last RATE_WINDOW_SECONDS is JUMP times the averaged one.
JUMP = 3.0
RATE_WINDOW_SECONDS = 0.25
MIN_ARRIVALS = 5
# What a request costs besides its point is learned while the averaged rate of auto requests is at least
# this: below, the cores' use per request is mostly the server idling.
MIN_RATE_FOR_COSTS = 10.0
# ... and while the averaged rate has caught up with the rate over the last hold as it is, to this share: at
# the start of a load the averaged use still holds what the server did before (other models' requests), and
# per auto request that is a large cost.
CAUGHT_UP = 0.8
# Climbs are judged at the rate as it is until the averaged rate is within this share of it: at 0.8 of it, the
# cores' time a request may take read 25% too high, and the ceiling climbed as a load started.
RATE_CAUGHT_UP = 0.95


class RecentRate:
    """Auto requests per second over a window of the last seconds, from the first of them to now.

    A stall of the event loop shorter than the window does not make the requests it then takes in at once
    read as a higher rate: the window still holds those before the stall."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._times: deque[float] = deque()

    def arrive(self, now: float) -> None:
        self._times.append(now)

    def rate(self, now: float) -> float:
        """0 while fewer than MIN_ARRIVALS requests came in the window."""
        times = self._times
        while times and times[0] < now - self._window:
            times.popleft()
        if len(times) < MIN_ARRIVALS:
            return 0.0
        return (len(times) - 1) / max(now - times[0], 1e-3)


class AutoLoad:
    """The server's use of the cores and the auto requests' rate, averaged over `hold_seconds` and as they are."""

    def __init__(self, cores: int, hold_seconds: float, cost_ms: float) -> None:
        self.cores = cores
        self._hold = hold_seconds
        self.busy = 0.0  # the share of the cores in use, averaged over hold_seconds
        self.rate = 0.0  # auto requests per second, averaged likewise
        self.cost_ms = cost_ms  # the ceiling position's own time per auto request, averaged likewise
        self.other_ms = 0.0  # the cores' time per auto request besides its point's own, while there were some
        self._counters: tuple[float, int, float] | None = None  # CPU seconds, requests, when: at the last `use`
        self._recent = RecentRate(RATE_WINDOW_SECONDS)
        self._held = RecentRate(hold_seconds)

    def arrive(self, now: float) -> None:
        """An auto request came."""
        self._recent.arrive(now)
        self._held.arrive(now)

    def use(self, cpu_seconds: float, requests: int, cost_ms: float, now: float) -> float:
        """The server's CPU seconds and auto requests so far, and the position's cost now: into the averages.

        Returns the averaged share of the cores in use."""
        if self._counters is None:  # the CPU the server used before (loading, calibrating) is no load
            self._counters = (cpu_seconds, requests, now)
            return self.busy
        last_cpu, last_requests, at = self._counters
        elapsed = now - at
        if elapsed <= 0:
            return self.busy
        weight = 1.0 - math.exp(-elapsed / self._hold)
        self.busy += weight * ((cpu_seconds - last_cpu) / elapsed / self.cores - self.busy)
        self.rate += weight * ((requests - last_requests) / elapsed - self.rate)
        self.cost_ms += weight * (cost_ms - self.cost_ms)
        self._counters = (cpu_seconds, requests, now)
        if self.rate >= MIN_RATE_FOR_COSTS and self._caught_up(now):
            self.other_ms = max(0.0, self.per_request_ms() - self.cost_ms)
        return self.busy

    def per_request_ms(self) -> float:
        """What an auto request costs the cores, from the averages."""
        return self.busy * self.cores * 1000.0 / self.rate

    def rate_now(self, now: float) -> float:
        """The averaged rate, or at the start of a load, before it has caught up, the rate over the last hold."""
        held = self._held.rate(now)
        return self.rate if self.rate >= RATE_CAUGHT_UP * held else held

    def _caught_up(self, now: float) -> bool:
        return self.rate >= CAUGHT_UP * self._held.rate(now)

    def jumped(self, now: float) -> float | None:
        """The rate of the last RATE_WINDOW_SECONDS where it is JUMP times the averaged one, else None."""
        rate = self._recent.rate(now)
        return rate if rate > JUMP * self.rate else None
