"""What the frontier's points cost as the server runs them now, for the ceiling's climbs (auto_ceiling.py).

The start-up calibration times each point alone, on one synthetic photo. Whether a climb fits depends on what
it adds per image under the load and on the images actually served: decoding is most of a cheap point's cost
and depends on the images' sizes (a point's resolution decides how far a JPEG is DCT-downscaled), and under
load the points differ in ways one image alone does not show. So a point that ran lately on one core is
costed at its recent time per image there, and the others at their calibrated cost. Under load every batch
takes longer than alone (it shares its core with the HTTP work and the other threads), so the recent times
are brought to the calibration's scale: divided by how the points that ran compare with their calibrated
cost, in the median. No point is costed below the one under it on the frontier: a climb to it costs
nothing more.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

# A point's recent time counts while its last batch is at most this old: it was measured under today's load.
LIVE_SECONDS = 2.0

# A point's recent time per image on one core in ms, and the seconds since its last batch; None if it never ran.
Live = Callable[[str, int], tuple[float, float] | None]


def current_costs(calibrated: list[float], observed: list[float | None]) -> list[float]:
    """Each point's cost per image in ms, cheapest first: `observed` where a point ran lately (None: not)."""
    ratios = [seen / cost for seen, cost in zip(observed, calibrated, strict=True) if seen and cost > 0]
    scale = statistics.median_high(ratios) if ratios else 1.0
    costs: list[float] = []
    for seen, cost in zip(observed, calibrated, strict=True):
        own = seen / scale if seen else cost
        costs.append(max(own, costs[-1]) if costs else own)
    return costs


def fresh(live: tuple[float, float] | None) -> float | None:
    """The recent time per image, if the point ran within LIVE_SECONDS."""
    return live[0] if live is not None and live[1] <= LIVE_SECONDS else None
