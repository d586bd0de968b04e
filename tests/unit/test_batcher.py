"""The batch queue as policy, with a fake runner: batch formation, instances side by side, its bound,
batches handed out ahead, Retry-After, deadlines, a runner that breaks. No model is involved."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from service.batcher import Batcher, BatchResult, Queued
from service.config import BatchingConfig
from service.errors import ServiceError

KEY = "k"


class ThreadRunner:
    """Runs each batch on one of `instances` threads; an item's payload is a callable that returns its outcome."""

    def __init__(self, instances: int) -> None:
        self.instances = instances
        self.batches: list[int] = []  # the size of each batch, in the order handed out
        self._executor = ThreadPoolExecutor(max_workers=instances)

    def run_batch(self, batch: list[Queued[Any]], alone: bool) -> asyncio.Future[BatchResult]:
        self.batches.append(len(batch))
        return asyncio.get_running_loop().run_in_executor(self._executor, self._run, batch)

    def _run(self, batch: list[Queued[Any]]) -> BatchResult:
        started = time.perf_counter()
        outcomes: list[Any] = []
        for item in batch:
            try:
                outcomes.append(item.payload())
            except Exception as exc:
                outcomes.append(exc)
        return BatchResult(outcomes, time.perf_counter() - started)


def _batcher(runner: ThreadRunner, depths: list[int] | None = None, **config: Any) -> Batcher:
    settings = BatchingConfig(instances=runner.instances, **config)
    report = depths.append if depths is not None else (lambda depth: None)
    return Batcher("fake", settings, runner.run_batch, runner.instances, report)


def _value(value: Any) -> Callable[[], Any]:
    return lambda: value


def _blocking() -> tuple[Callable[[], str], threading.Event, threading.Event]:
    """A payload that signals `taken` when an instance starts it, then waits for `release`."""
    taken, release = threading.Event(), threading.Event()

    def blocked() -> str:
        taken.set()
        release.wait(10)
        return "blocked"

    return blocked, taken, release


def _deadline() -> float:
    return time.perf_counter() + 60


def test_items_queued_together_close_as_full_batches_and_each_future_gets_its_outcome() -> None:
    runner = ThreadRunner(1)

    async def scenario() -> list[Any]:
        # One instance and a long delay: six items queue together and close as a full batch of 4, then 2.
        batcher = _batcher(runner, max_batch_size=4, max_queue_delay_ms=50, max_queue_size=8)
        futures = batcher.submit([_value(i) for i in range(6)], KEY, _deadline())
        outcomes = await asyncio.gather(*futures)
        await batcher.drain(5.0)
        return outcomes

    assert asyncio.run(scenario()) == list(range(6))
    assert runner.batches == [4, 2]


def test_only_items_with_equal_keys_share_a_batch() -> None:
    runner = ThreadRunner(1)

    async def scenario() -> None:
        batcher = _batcher(runner, max_batch_size=8, max_queue_delay_ms=30)
        futures = batcher.submit([_value(1)] * 3, "a", _deadline()) + batcher.submit([_value(2)] * 2, "b", _deadline())
        assert await asyncio.gather(*futures) == [1, 1, 1, 2, 2]
        await batcher.drain(1.0)

    asyncio.run(scenario())
    assert sorted(runner.batches) == [2, 3]


def test_instances_run_batches_side_by_side() -> None:
    """Two instances: while one is busy with its item, the other takes the next batch."""
    started: list[float] = []

    def slow() -> None:
        started.append(time.perf_counter())
        time.sleep(0.2)

    async def scenario() -> float:
        batcher = _batcher(ThreadRunner(2), max_batch_size=1, max_queue_size=8)
        began = time.perf_counter()
        await asyncio.gather(*batcher.submit([slow, slow], KEY, _deadline()))
        await batcher.drain(5.0)
        return time.perf_counter() - began

    elapsed = asyncio.run(scenario())
    assert len(started) == 2 and abs(started[1] - started[0]) < 0.15, started
    assert elapsed < 0.38, elapsed


def test_refuses_past_its_bound_and_after_draining() -> None:
    blocked, taken, release = _blocking()

    async def scenario() -> None:
        batcher = _batcher(ThreadRunner(1), max_batch_size=1, max_queue_size=3)
        running = batcher.submit([blocked], KEY, _deadline())
        assert await asyncio.to_thread(taken.wait, 10)  # the one instance is busy with it, not queued
        queued = batcher.submit([blocked] * 3, KEY, _deadline())
        with pytest.raises(ServiceError) as caught:
            batcher.submit([blocked], KEY, _deadline())
        assert caught.value.status == 429 and caught.value.headers and "Retry-After" in caught.value.headers
        with pytest.raises(ServiceError) as too_many:
            batcher.submit([blocked] * 4, KEY, _deadline())
        assert too_many.value.status == 413
        release.set()
        await asyncio.gather(*running, *queued)
        await batcher.drain(1.0)
        with pytest.raises(ServiceError) as closed:
            batcher.submit([blocked], KEY, _deadline())
        assert closed.value.status == 503

    asyncio.run(scenario())


def test_a_full_batch_waits_for_a_busy_instance_and_starts_without_the_event_loop() -> None:
    """One instance, busy: the next full batch is handed out ahead and starts while the loop is blocked."""
    blocked, taken, release = _blocking()
    ahead_started = threading.Event()
    runner = ThreadRunner(1)
    depths: list[int] = []

    def ahead() -> str:
        ahead_started.set()
        return "ahead"

    async def scenario() -> bool:
        batcher = _batcher(runner, depths, max_batch_size=2, max_queue_size=8)
        running = batcher.submit([blocked], KEY, _deadline())
        assert await asyncio.to_thread(taken.wait, 10)
        full = batcher.submit([ahead, ahead], KEY, _deadline())
        partial = batcher.submit([ahead], KEY, _deadline())  # not a full batch: it stays in the loop's queue
        release.set()
        # The event loop is blocked here, so only the instance itself can start the batch handed out ahead.
        started_while_blocked = ahead_started.wait(10)
        await asyncio.gather(*running, *full, *partial)
        await batcher.drain(1.0)
        return started_while_blocked

    assert asyncio.run(scenario())
    assert runner.batches == [1, 2, 1]  # 1, then the full 2 handed out ahead, then the 1 that waited in the queue
    assert depths[2] == 3  # items not yet started: the two handed out ahead and the one queued
    assert depths[-1] == 0


def test_retry_after_is_when_the_queue_will_have_drained() -> None:
    """Queued items times the recent time per item, over the instances: 6 x 0.4 s on one instance."""
    blocked, taken, release = _blocking()

    def slow() -> None:
        time.sleep(0.4)

    async def scenario() -> str:
        batcher = _batcher(ThreadRunner(1), max_batch_size=1, max_queue_size=6)
        await asyncio.gather(*batcher.submit([slow], KEY, _deadline()))  # sets the pace
        running = batcher.submit([blocked], KEY, _deadline())
        assert await asyncio.to_thread(taken.wait, 10)
        queued = batcher.submit([blocked] * 6, KEY, _deadline())
        with pytest.raises(ServiceError) as caught:
            batcher.submit([blocked], KEY, _deadline())
        release.set()
        await asyncio.gather(*running, *queued)
        await batcher.drain(1.0)
        assert caught.value.status == 429 and caught.value.headers
        return caught.value.headers["Retry-After"]

    assert asyncio.run(scenario()) in {"3", "4"}  # 2.4 s and a little for the runs, in whole seconds


def test_each_key_keeps_the_pace_of_its_batches_that_held_one_core() -> None:
    """model=auto costs a point by its key's recent time per item; a batch that took every core ran at another pace."""

    class WholeCores(ThreadRunner):
        def _run(self, batch: list[Queued[Any]]) -> BatchResult:
            return replace(super()._run(batch), cores=2 if batch[0].key == "whole" else 1)

    def slow() -> None:
        time.sleep(0.05)

    async def scenario() -> Batcher:
        batcher = _batcher(WholeCores(1), max_batch_size=1)
        for key in ("one", "whole"):
            await asyncio.gather(*batcher.submit([slow], key, _deadline()))
        await batcher.drain(1.0)
        return batcher

    batcher = asyncio.run(scenario())
    pace = batcher.pace_of("one")
    assert pace is not None and 0.05 <= pace.seconds_per_item < 1.0
    assert 0.0 <= time.monotonic() - pace.recorded_at < 5.0
    assert batcher.pace_of("whole") is None and batcher.pace_of("never") is None


def test_an_item_past_its_deadline_fails_with_504_without_running() -> None:
    blocked, taken, release = _blocking()
    ran: list[str] = []

    async def scenario() -> BaseException | None:
        batcher = _batcher(ThreadRunner(1), max_batch_size=1, max_queue_size=8)
        running = batcher.submit([blocked], KEY, _deadline())
        assert await asyncio.to_thread(taken.wait, 10)
        ahead = batcher.submit([_value("ahead")], KEY, _deadline())  # takes the one place handed out ahead
        late = batcher.submit([lambda: ran.append("late")], KEY, time.perf_counter() + 0.01)
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*running, *ahead)
        outcome = (await asyncio.gather(*late, return_exceptions=True))[0]
        await batcher.drain(1.0)
        return outcome if isinstance(outcome, BaseException) else None

    error = asyncio.run(scenario())
    assert isinstance(error, ServiceError) and error.status == 504
    assert ran == []


def test_a_runner_that_breaks_fails_its_batch_and_the_queue_keeps_serving() -> None:
    calls: list[int] = []

    def run_batch(batch: list[Queued[Any]], alone: bool) -> asyncio.Future[BatchResult]:
        calls.append(len(batch))
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        if len(calls) == 1:
            future.set_exception(RuntimeError("instance died"))
        else:
            future.set_result(BatchResult([item.payload for item in batch], 0.001))
        return future

    async def scenario() -> tuple[list[Any], list[Any]]:
        batcher = Batcher("fake", BatchingConfig(instances=1), run_batch, 1)
        first = await asyncio.gather(*batcher.submit(["a"], KEY, _deadline()), return_exceptions=True)
        second = await asyncio.gather(*batcher.submit(["b"], KEY, _deadline()), return_exceptions=True)
        await batcher.drain(1.0)
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], ServiceError) and first[0].status == 500
    assert second == ["b"]
