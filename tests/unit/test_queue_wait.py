"""The queue wait auto predicts (queue_wait.py): the whole backlog for the load, a shared wait for a new image."""

from __future__ import annotations

import pytest

from service.queue_wait import Flow, backlog_ms, shared_wait_ms


def test_the_backlog_is_every_image_in_flight_over_the_cores() -> None:
    assert backlog_ms([Flow(4, 0.010), Flow(2, 0.003), Flow(0, 0.050)], cores=2) == pytest.approx(23.0)
    assert backlog_ms([], cores=2) == 0.0


def test_a_new_image_waits_for_each_image_in_flight_as_long_as_its_own_time_at_most() -> None:
    flows = [Flow(4, 0.010), Flow(2, 0.003)]
    # 4 images of 10 ms count 4 ms each beside a 4 ms image, the 3 ms ones whole; a core comes free within 10 ms.
    assert shared_wait_ms(flows, cores=2, own_ms=4.0) == pytest.approx((4 * 4.0 + 2 * 3.0) / 2 + 10.0)
    # A costly image waits for the whole backlog, plus the core to come free.
    assert shared_wait_ms(flows, cores=2, own_ms=20.0) == pytest.approx(backlog_ms(flows, 2) + 10.0)


def test_no_wait_while_a_core_is_free() -> None:
    assert shared_wait_ms([Flow(1, 0.010), Flow(0, 0.050)], cores=2, own_ms=4.0) == 0.0
    assert shared_wait_ms([], cores=2, own_ms=4.0) == 0.0
