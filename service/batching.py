"""The per-model dynamic batcher: a bounded queue served by a few inference instances.

As in Triton, a model has `instances` threads that run batches at the same time, and a batch
closes when it holds `max_batch_size` images or when its oldest image has waited
`max_queue_delay_ms`. Images are grouped by (resolution, outputs), since only those can share a
tensor. Each instance thread takes its next batch from the queue itself, as soon as it is free:
the event loop only queues images and receives outcomes, so a busy loop never leaves a core idle
between two batches. An instance decodes its batch's images right before the run: on a CPU that
keeps each image in the cache of the core that runs it (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import BatchingConfig
from .errors import ServiceError
from .metrics import Metrics
from .runtime import ModelSession

log = logging.getLogger("mobilenet_serve.batching")

BatchKey = tuple[int, tuple[str, ...]]
# Called on an instance thread; returns what the caller wants back with the outputs, and the input tensor.
Prepare = Callable[[], tuple[Any, np.ndarray]]
Outcome = tuple[Any, list[np.ndarray]]
# Weight of the newest batch in the running time per image that Retry-After is computed from.
PACE_WEIGHT = 0.2


@dataclass(eq=False)
class _Item:
    prepare: Prepare
    key: BatchKey
    future: asyncio.Future[Outcome]
    enqueued_at: float
    deadline: float


class DynamicBatcher:
    def __init__(self, model: str, session: ModelSession, config: BatchingConfig, metrics: Metrics) -> None:
        self.model = model
        self.config = config
        self._session = session
        self._metrics = metrics
        # Guards the queue, `_idle`, `_busy` and `_closing`.
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        # Wake-up events of the instances waiting for work, the most recently busy last: new work goes to
        # it, so that one request at a time keeps running on the same instance, with its caches warm.
        self._idle: list[threading.Event] = []
        self._busy = 0
        self._closing = False
        # Recent wall time an instance spends per image (decode and run); 0 until a batch has run.
        self._seconds_per_image = 0.0
        self._instances = config.instances or 1
        self._threads = [
            threading.Thread(target=self._serve, name=f"infer-{model}-{k}", daemon=True) for k in range(self._instances)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, prepares: list[Prepare], key: BatchKey, deadline: float) -> list[asyncio.Future[Outcome]]:
        """Queue a request's images together, or refuse them all at once; each future gets one image's outcome."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._admit(len(prepares))
            now = time.perf_counter()
            futures: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in prepares]
            self._queue.extend(_Item(p, key, f, now, deadline) for p, f in zip(prepares, futures, strict=True))
            depth = len(self._queue)
            self._wake(len(prepares))
        self._metrics.queue_depth.labels(self.model).set(depth)
        return futures

    async def drain(self, timeout: float) -> None:
        """Refuse new work, finish what is queued and running, then stop the instances."""
        with self._lock:
            self._closing = True
            self._wake(len(self._idle))
        # The instances leave once the queue is empty; past the timeout, what is still queued is refused.
        if not await asyncio.to_thread(self._join, timeout):
            with self._lock:
                left = list(self._queue)
                self._queue.clear()
            log.warning("model %s: %d images still queued at shutdown", self.model, len(left))
            _deliver(left, [ServiceError(503, "the server is shutting down", code="shutting_down")] * len(left))
            await asyncio.to_thread(self._join, None)

    async def warm_up(self, tensor: np.ndarray, outputs: tuple[str, ...]) -> None:
        """One run outside the queue, so the first request does not pay for ORT's lazy allocations."""
        await asyncio.to_thread(self._session.warm_up, tensor[None], outputs)

    def _join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _admit(self, count: int) -> None:
        if self._closing:
            raise ServiceError(503, "the server is shutting down", code="shutting_down")
        if count > self.config.max_queue_size:
            raise ServiceError(
                413, f"{count} images exceed the {self.config.max_queue_size} that model {self.model} can queue"
            )
        if len(self._queue) + count > self.config.max_queue_size:
            raise ServiceError(
                429,
                f"model {self.model} has {self.config.max_queue_size} images queued; retry later",
                headers={"Retry-After": str(self._retry_after_seconds())},
            )

    def _retry_after_seconds(self) -> int:
        """When the queue, at the recent pace, will have drained: a refused client's best time to come back."""
        backlog = len(self._queue) * self._seconds_per_image / self._instances
        return max(1, math.ceil(backlog + self.config.max_queue_delay_ms / 1000.0))

    # ------------------------------------------------------------------ instance threads

    def _serve(self) -> None:
        wake = threading.Event()
        while (taken := self._next_batch(wake)) is not None:
            batch, alone = taken
            started = time.perf_counter()
            try:
                outcomes = self._prepare_and_infer(batch, alone)
            except Exception as exc:  # the instance itself broke, not one image: fail the batch, keep serving
                log.exception("model %s: batch of %d failed", self.model, len(batch))
                outcomes = [ServiceError(500, f"inference failed: {exc}", code="inference_failed")] * len(batch)
            per_image = (time.perf_counter() - started) / len(batch)
            pace = self._seconds_per_image
            self._seconds_per_image = per_image if not pace else pace + PACE_WEIGHT * (per_image - pace)
            with self._lock:
                self._busy -= 1
            _deliver(batch, outcomes)

    def _wake(self, count: int) -> None:
        """Wake up to `count` idle instances, the most recently busy first; the caller holds the lock."""
        for _ in range(min(count, len(self._idle))):
            self._idle.pop().set()

    def _next_batch(self, wake: threading.Event) -> tuple[list[_Item], bool] | None:
        """Wait for a closed batch and take it; None once the batcher is closing and the queue is empty."""
        while True:
            with self._lock:
                while self._queue and self._queue[0].future.done():
                    self._queue.popleft()  # the request gave up (deadline passed) while queued
                timeout: float | None = None
                if self._queue:
                    first = self._queue[0]
                    timeout = first.enqueued_at + self.config.max_queue_delay_ms / 1000.0 - time.perf_counter()
                    if timeout <= 0 or self._closing or self._count(first.key) >= self.config.max_batch_size:
                        batch = self._take(first.key)
                        if not batch:
                            continue
                        alone = self._busy == 0
                        self._busy += 1
                        if self._queue:
                            self._wake(1)  # more work than this batch: another idle instance may take it
                        self._metrics.queue_depth.labels(self.model).set(len(self._queue))
                        return batch, alone
                elif self._closing:
                    return None
                wake.clear()
                self._idle.append(wake)
            wake.wait(timeout)
            with self._lock:
                if wake in self._idle:  # the wait timed out: a batch may have closed by its delay
                    self._idle.remove(wake)

    def _count(self, key: BatchKey) -> int:
        return sum(1 for item in self._queue if item.key == key)

    def _take(self, key: BatchKey) -> list[_Item]:
        """Pop up to max_batch_size live items with `key`, keeping the others in order."""
        now = time.perf_counter()
        batch: list[_Item] = []
        expired: list[_Item] = []
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            if now > item.deadline:
                expired.append(item)
            elif item.key == key and len(batch) < self.config.max_batch_size:
                batch.append(item)
            else:
                kept.append(item)
        self._queue = kept
        _deliver(expired, [ServiceError(504, "the request's deadline passed while it was queued")] * len(expired))
        wait = self._metrics.queue_wait.labels(self.model)
        for item in batch:
            wait.observe(now - item.enqueued_at)
        return batch

    def _prepare_and_infer(self, batch: list[_Item], alone: bool) -> list[Outcome | BaseException]:
        """Decode each image, then run the decoded ones together."""
        outcomes: list[Outcome | BaseException | None] = []
        ready: list[tuple[int, Any, np.ndarray]] = []
        for item in batch:
            if item.future.done():  # the request gave up (deadline passed): skip its work
                outcomes.append(ServiceError(504, "the request's deadline passed while it was queued"))
                continue
            try:
                extra, tensor = item.prepare()
            except Exception as exc:
                outcomes.append(exc)
                continue
            ready.append((len(outcomes), extra, tensor))
            outcomes.append(None)  # filled in by the run below
        for (index, _, _), outcome in zip(ready, self._infer_isolated(ready, batch[0].key[1], alone), strict=True):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]  # every None was filled

    def _infer_isolated(
        self, ready: list[tuple[int, Any, np.ndarray]], outputs: tuple[str, ...], alone: bool
    ) -> list[Outcome | BaseException]:
        if not ready:
            return []
        try:
            results = self._infer([tensor for _, _, tensor in ready], outputs, alone)
        except Exception as exc:
            if len(ready) > 1:
                # Rerun the images one by one so only a culprit fails.
                return [self._infer_isolated([entry], outputs, alone)[0] for entry in ready]
            log.error("model %s: inference failed: %s", self.model, exc)
            return [ServiceError(500, f"inference failed: {exc}", code="inference_failed")]
        return [(extra, [output[row] for output in results]) for row, (_, extra, _) in enumerate(ready)]

    def _infer(self, tensors: list[np.ndarray], outputs: tuple[str, ...], alone: bool) -> list[np.ndarray]:
        stacked = np.stack(tensors) if len(tensors) > 1 else tensors[0][None]
        started = time.perf_counter()
        results = self._session.run(stacked, outputs, alone)
        self._metrics.inference_duration.labels(self.model).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(self.model).observe(len(tensors))
        return results


def _deliver(items: list[_Item], outcomes: Sequence[Outcome | BaseException]) -> None:
    """Hand each item its outcome on its own event loop, with one wake-up of the loop for them all."""
    if not items:
        return
    try:
        items[0].future.get_loop().call_soon_threadsafe(_resolve, items, outcomes)
    except RuntimeError:
        pass  # the loop has closed: no one is waiting for these outcomes any more


def _resolve(items: list[_Item], outcomes: Sequence[Outcome | BaseException]) -> None:
    for item, outcome in zip(items, outcomes, strict=True):
        if item.future.done():
            continue
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)
