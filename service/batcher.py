"""A dynamic batch queue that knows nothing of models: admission, batch formation, deadlines, Retry-After.

As in Triton, a batch closes when it holds `max_batch_size` items (fewer where `batch_limit` says so for
its key) or when its oldest item has waited
`max_queue_delay_ms`, and `instances` batches run at the same time. While every instance is busy, up
to one full batch per instance is handed out ahead to wait for one, so an instance that finishes
starts its next batch at once instead of waiting for the event loop. Batches are handed out only from
the event loop, which receives every result first, so finished results cannot pile up ahead of the
responses that carry them. Items share a batch only when their keys are equal. What a batch is run
with is the `RunBatch` callable: the model instances in production, a fake in the unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .config import BatchingConfig
from .errors import SHUTTING_DOWN, ServiceError

log = logging.getLogger("mobilenet_serve.batcher")

T = TypeVar("T")
# Weight of the newest batch in the running time per item that Retry-After is computed from.
PACE_WEIGHT = 0.2
# Full batches that may wait for a busy instance, per instance (docs/benchmarks.md, "Batches handed out ahead").
QUEUED_BATCHES_PER_INSTANCE = 1


@dataclass(eq=False)
class Queued(Generic[T]):
    """One item in the queue: what to run, whom to tell, and since when it waits."""

    payload: T
    key: Hashable
    future: asyncio.Future[Any]
    enqueued_at: float
    deadline: float

    @property
    def abandoned(self) -> bool:
        """Whether its request stopped waiting (deadline passed, client gone): its work can be skipped."""
        return self.future.done()


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Any]  # one per item, in order: its result, or the exception that fails only it
    seconds: float  # the instance's time on the batch, excluding any wait for the instance
    cores: int = 1  # the cores it held: a batch that runs alone may take them all


# Called on the event loop; returns at once a future of the batch's result. `alone` says no other batch runs.
RunBatch = Callable[[list[Queued[Any]], bool], "asyncio.Future[BatchResult]"]


class Pace:
    """The recent instance time per item, and from it when a backlog will have drained."""

    def __init__(self) -> None:
        self._seconds_per_item = 0.0  # 0 until a batch ran
        self.recorded_at = -math.inf  # time.monotonic() of the last batch

    @property
    def seconds_per_item(self) -> float:
        return self._seconds_per_item

    def expect(self, seconds_per_item: float) -> None:
        """A first estimate, from elsewhere (the start-up calibration), until a batch has run."""
        if not self._seconds_per_item:
            self._seconds_per_item = seconds_per_item

    def record(self, items: int, seconds: float) -> None:
        per_item = seconds / items
        pace = self._seconds_per_item
        self._seconds_per_item = per_item if not pace else pace + PACE_WEIGHT * (per_item - pace)
        self.recorded_at = time.monotonic()

    def drained_in(self, items: int, instances: int, delay_seconds: float) -> int:
        """Whole seconds until `items` have started: a refused client's best time to come back."""
        return max(1, math.ceil(items * self._seconds_per_item / instances + delay_seconds))


class Batcher:
    def __init__(
        self,
        name: str,
        config: BatchingConfig,
        run_batch: RunBatch,
        instances: int,
        report_depth: Callable[[int], None] = lambda depth: None,
        batch_limit: Callable[[Hashable], int] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._run_batch = run_batch
        self._instances = instances
        self._report_depth = report_depth
        self._batch_limit = batch_limit or (lambda key: config.max_batch_size)
        self._queue: deque[Queued[Any]] = deque()
        # Batches handed out and not finished, in the order handed out: the first `instances` are running.
        self._handed_out: list[list[Queued[Any]]] = []
        self._max_handed_out = instances * (1 + QUEUED_BATCHES_PER_INSTANCE)
        self._timer: asyncio.TimerHandle | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.pace = Pace()
        self._paces: dict[Hashable, Pace] = {}  # per key, of the batches that held one core

    @property
    def in_flight(self) -> int:
        """Items queued or handed out and not finished; from another thread, a close enough reading."""
        return len(self._queue) + sum(len(batch) for batch in list(self._handed_out))

    def pace_of(self, key: Hashable) -> Pace | None:
        """The recent time per item of the batches with `key` that held one core; None if none has run."""
        return self._paces.get(key)

    def can_admit(self, count: int) -> bool:
        """Whether `count` more items would be queued now rather than refused."""
        return not self._closing and self._waiting() + count <= self.config.max_queue_size

    def submit(self, payloads: list[Any], key: Hashable, deadline: float) -> list[asyncio.Future[Any]]:
        """Queue a request's items together, or refuse them all at once; each future gets one item's outcome."""
        self._admit(len(payloads))
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        for payload in payloads:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append(Queued(payload, key, future, now, deadline))
            futures.append(future)
        self._idle.clear()
        self._pump()
        return futures

    async def drain(self, timeout: float) -> None:
        """Refuse new work and finish what is queued and running, for at most `timeout` seconds."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%s: %d items still queued at shutdown", self.name, len(self._queue))
        if self._timer is not None:
            self._timer.cancel()
        for item in self._queue:
            _fail(item, ServiceError(503, SHUTTING_DOWN, code="shutting_down"))
        self._queue.clear()

    def _admit(self, count: int) -> None:
        if self._closing:
            raise ServiceError(503, SHUTTING_DOWN, code="shutting_down")
        limit = self.config.max_queue_size
        if count > limit:
            raise ServiceError(413, f"{count} images exceed the {limit} that model {self.name} can queue")
        waiting = self._waiting()
        if waiting + count > limit:
            retry_after = self.pace.drained_in(waiting, self._instances, self.config.max_queue_delay_ms / 1000.0)
            raise ServiceError(
                429,
                f"model {self.name} has {limit} images queued; retry later",
                headers={"Retry-After": str(retry_after)},
            )

    def _pump(self) -> None:
        """Hand closed batches to free instances; called whenever items arrive or an instance frees up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while len(self._handed_out) < self._max_handed_out and self._queue:
            first = self._queue[0]
            if first.abandoned:
                self._queue.popleft()
                continue
            size = self._batch_limit(first.key)
            full = sum(1 for item in self._queue if item.key == first.key) >= size
            if len(self._handed_out) >= self._instances and not full:
                break  # every instance is busy: only a full batch is worth handing out ahead
            close_at = first.enqueued_at + self.config.max_queue_delay_ms / 1000.0
            if not full and time.perf_counter() < close_at:
                self._timer = loop.call_at(loop.time() + close_at - time.perf_counter(), self._pump)
                break
            batch, self._queue = _take(self._queue, first.key, size)
            if batch:
                alone = not self._handed_out
                self._handed_out.append(batch)
                # Handed to the instances now, not when a task first runs: an instance that frees up while
                # the loop is busy can then start it at once.
                running = self._run_batch(batch, alone)
                task = loop.create_task(self._finish(batch, running), name=f"batch-{self.name}")
                self._finishing.add(task)
                task.add_done_callback(self._finishing.discard)
        self._report_depth(self._waiting())
        if not self._queue and not self._handed_out:
            self._idle.set()

    def _waiting(self) -> int:
        """Items not yet started: those queued and those in batches waiting for a busy instance."""
        return len(self._queue) + sum(len(batch) for batch in self._handed_out[self._instances :])

    async def _finish(self, batch: list[Queued[Any]], running: asyncio.Future[BatchResult]) -> None:
        try:
            result = await running
        except Exception as exc:  # the runner itself broke, not one item: fail the batch, keep serving
            log.exception("%s: batch of %d failed", self.name, len(batch))
            error = ServiceError(500, f"inference failed: {exc}", code="inference_failed")
            result = BatchResult([error] * len(batch), 0.0)
        finally:
            self._handed_out = [other for other in self._handed_out if other is not batch]
        if result.seconds:
            self.pace.record(len(batch), result.seconds)
            if result.cores == 1:
                self._paces.setdefault(batch[0].key, Pace()).record(len(batch), result.seconds)
        for item, outcome in zip(batch, result.outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _fail(item, outcome)
            elif not item.future.done():
                item.future.set_result(outcome)
        self._pump()


def _take(queue: deque[Queued[Any]], key: Hashable, size: int) -> tuple[list[Queued[Any]], deque[Queued[Any]]]:
    """Up to `size` live items with `key`, and the queue of the others in order; items past their deadline fail."""
    now = time.perf_counter()
    batch: list[Queued[Any]] = []
    kept: deque[Queued[Any]] = deque()
    for item in queue:
        if item.abandoned:
            continue
        if now > item.deadline:
            _fail(item, ServiceError(504, "the request's deadline passed while it was queued"))
        elif item.key == key and len(batch) < size:
            batch.append(item)
        else:
            kept.append(item)
    return batch, kept


def _fail(item: Queued[Any], error: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(error)
