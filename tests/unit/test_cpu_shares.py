"""The CPU shares: cores granted in turn by core time per image in flight, with a clock the test advances."""

from __future__ import annotations

import threading
import time
from collections import Counter

from service.cpu_shares import CpuShares


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _compete(shares: CpuShares, clock: Clock, flows: list[str], turns: int) -> list[str]:
    """One thread per flow, each always asking for a core and holding it for one second; who got each turn."""
    order: list[str] = []
    everyone_waiting = threading.Barrier(len(flows))

    def worker(name: str) -> None:
        everyone_waiting.wait()
        while True:
            with shares.turn(name):
                if len(order) >= turns:
                    return
                order.append(name)
                clock.now += 1.0
                time.sleep(0.001)  # lets the other threads line up for the next turn

    threads = [threading.Thread(target=worker, args=(name,)) for name in flows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return order


def test_a_core_is_shared_in_proportion_to_the_images_each_flow_has_in_flight() -> None:
    clock = Clock()
    shares = CpuShares(1, None, clock)
    shares.add("cheap", lambda: 56)
    shares.add("costly", lambda: 8)
    turns = Counter(_compete(shares, clock, ["cheap", "costly"], 320))
    # 56 of 64 images in flight are the cheap flow's: 280 of 320 core-seconds, give or take the start.
    assert 270 <= turns["cheap"] <= 290, turns


def test_equal_flows_take_turns() -> None:
    clock = Clock()
    shares = CpuShares(1, None, clock)
    shares.add("a", lambda: 1)
    shares.add("b", lambda: 1)
    order = _compete(shares, clock, ["a", "b"], 40)
    assert abs(order.count("a") - order.count("b")) <= 2, order


def test_a_flow_that_was_idle_does_not_spend_credit_it_banked() -> None:
    clock = Clock()
    shares = CpuShares(1, None, clock)
    shares.add("busy", lambda: 1)
    shares.add("late", lambda: 1)
    for _ in range(50):  # 50 core-seconds alone, while "late" had nothing to run
        with shares.turn("busy"):
            clock.now += 1.0
    order = _compete(shares, clock, ["busy", "late"], 20)
    assert order.count("late") <= 12, order  # level with "busy", not 50 turns ahead of it


def test_a_batch_alone_takes_every_core_and_one_beside_another_flow_takes_one() -> None:
    shares = CpuShares(2, [5, 7])
    shares.add("a", lambda: 1)
    shares.add("b", lambda: 1)
    with shares.turn("a", whole=True) as grant:
        assert grant.slots == (0, 1) and grant.cpu == 5
    with shares.turn("b"), shares.turn("a", whole=True) as grant:
        assert grant.slots == (1,) and grant.cpu == 7


def test_the_preferred_core_comes_first_when_free() -> None:
    shares = CpuShares(2, [5, 7])
    shares.add("a", lambda: 1)
    shares.add("b", lambda: 1)
    with shares.turn("a", prefer=1) as grant:
        assert grant.slots == (1,) and grant.cpu == 7
    with shares.turn("a", whole=True, prefer=1) as grant:
        assert grant.slots == (1, 0) and grant.cpu == 7  # every core, pinned to the preferred one
    with shares.turn("b", prefer=1), shares.turn("a", prefer=1) as grant:
        assert grant.slots == (0,)  # taken: the other one


def test_a_second_core_goes_to_a_waiting_flow_while_the_first_is_held() -> None:
    shares = CpuShares(2, None)
    shares.add("a", lambda: 1)
    shares.add("b", lambda: 1)
    got: list[tuple[int, ...]] = []

    def take() -> None:
        with shares.turn("b") as grant:
            got.append(grant.slots)

    with shares.turn("a") as first:
        thread = threading.Thread(target=take)
        thread.start()
        thread.join(5)
        assert first.slots == (0,) and got == [(1,)]
