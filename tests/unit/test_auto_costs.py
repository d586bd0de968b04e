"""What auto's ceiling climbs on (auto_costs.py): the points' recent times per image, at the calibration's scale."""

from __future__ import annotations

import pytest

from service.auto_costs import LIVE_SECONDS, current_costs, fresh

CALIBRATED = [3.0, 4.0, 6.0, 9.0, 13.0]


def test_without_recent_runs_the_calibrated_costs_stand() -> None:
    assert current_costs(CALIBRATED, [None] * 5) == CALIBRATED


def test_recent_times_count_at_the_calibrations_scale_and_never_below_the_point_under() -> None:
    # Under load the three cheapest took 8, 8 and 12 ms an image: twice (the median) their calibrated 3, 4 and 6
    # would be 6, 8 and 12. The cheapest two cost the same as they run, so a climb from one to the other is free.
    costs = current_costs(CALIBRATED, [8.0, 8.0, 12.0, None, None])
    assert costs == pytest.approx([4.0, 4.0, 6.0, 9.0, 13.0])
    # A point that runs cheaper than the one under it costs as much as that one.
    assert current_costs(CALIBRATED, [6.0, 4.0, 12.0, 18.0, 26.0]) == pytest.approx([3.0, 3.0, 6.0, 9.0, 13.0])


def test_a_time_counts_while_it_is_recent() -> None:
    assert fresh((7.5, 0.2)) == 7.5
    assert fresh((7.5, LIVE_SECONDS + 0.1)) is None
    assert fresh(None) is None
