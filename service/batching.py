"""The per-model dynamic batcher: a bounded queue served by a few inference instances.

As in Triton, a model has `instances` threads that run batches at the same time, and a batch
closes when it holds `max_batch_size` images or when its oldest image has waited
`max_queue_delay_ms`; a free instance then takes it. While every instance is busy, up to one full
batch per instance waits in the instances' own queue, so an instance that finishes starts its next
batch at once instead of waiting for the event loop to hand it one; batches are handed out only
from the event loop, which receives every outcome first, so finished outputs cannot pile up ahead
of the responses that carry them. Images are grouped by (resolution, outputs),
since only those can share a tensor. An instance decodes its batch's images itself, right before
the run: on a CPU that keeps each image in the cache of the core that runs it and costs no thread
hand-off between decoding and inference (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import BatchingConfig
from .cpu_affinity import pinner
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
# Full batches that may wait for a busy instance, per instance (docs/benchmarks.md: +1.4% V1, +2.9% V2 at c=32).
QUEUED_BATCHES_PER_INSTANCE = 1


@dataclass(eq=False)
class _Item:
    prepare: Prepare
    key: BatchKey
    future: asyncio.Future[Outcome]
    enqueued_at: float
    deadline: float


class DynamicBatcher:
    def __init__(
        self,
        model: str,
        session: ModelSession,
        config: BatchingConfig,
        metrics: Metrics,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self._session = session
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        # Batches handed to the instances and not finished, in the order handed out: the executor starts
        # them in that order, so the first `instances` of them are running and the rest are waiting.
        self._handed_out: list[list[_Item]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        # Recent wall time an instance spends per image (decode and run), for Retry-After; 0 until a batch ran.
        self._seconds_per_image = 0.0
        self._instances = config.instances or 1
        self._max_handed_out = self._instances * (1 + QUEUED_BATCHES_PER_INSTANCE)
        self._executor = ThreadPoolExecutor(
            max_workers=self._instances,
            thread_name_prefix=f"infer-{model}",
            initializer=pinner(cpus) if cpus else None,
        )

    def submit(self, prepares: list[Prepare], key: BatchKey, deadline: float) -> list[asyncio.Future[Outcome]]:
        """Queue a request's images together, or refuse them all at once; each future gets one image's outcome."""
        self._admit(len(prepares))
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for prepare in prepares:
            future: asyncio.Future[Outcome] = loop.create_future()
            self._queue.append(_Item(prepare, key, future, now, deadline))
            futures.append(future)
        self._idle.clear()
        self._pump()
        return futures

    async def drain(self, timeout: float) -> None:
        """Refuse new work, finish what is queued and running, then stop the instances."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("model %s: %d images still queued at shutdown", self.model, len(self._queue))
        if self._timer is not None:
            self._timer.cancel()
        for item in self._queue:
            _fail(item, ServiceError(503, "the server is shutting down", code="shutting_down"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def warm_up(self, tensor: np.ndarray, outputs: tuple[str, ...]) -> None:
        """One run outside the queue, so the first request does not pay for ORT's lazy allocations."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._session.warm_up, tensor[None], outputs)

    def _admit(self, count: int) -> None:
        if self._closing:
            raise ServiceError(503, "the server is shutting down", code="shutting_down")
        if count > self.config.max_queue_size:
            raise ServiceError(
                413, f"{count} images exceed the {self.config.max_queue_size} that model {self.model} can queue"
            )
        if self._waiting() + count > self.config.max_queue_size:
            raise ServiceError(
                429,
                f"model {self.model} has {self.config.max_queue_size} images queued; retry later",
                headers={"Retry-After": str(self._retry_after_seconds())},
            )

    def _retry_after_seconds(self) -> int:
        """When the queue, at the recent pace, will have drained: a refused client's best time to come back."""
        backlog = self._waiting() * self._seconds_per_image / self._instances
        return max(1, math.ceil(backlog + self.config.max_queue_delay_ms / 1000.0))

    def _pump(self) -> None:
        """Hand closed batches to free instances; called whenever images arrive or an instance frees up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while len(self._handed_out) < self._max_handed_out and self._queue:
            first = self._queue[0]
            if first.future.done():
                self._queue.popleft()
                continue
            full = self._count(first.key) >= self.config.max_batch_size
            if len(self._handed_out) >= self._instances and not full:
                break  # every instance is busy: only a full batch is worth handing out ahead
            close_at = first.enqueued_at + self.config.max_queue_delay_ms / 1000.0
            if not full and time.perf_counter() < close_at:
                self._timer = loop.call_at(loop.time() + close_at - time.perf_counter(), self._pump)
                break
            batch = self._take(first.key)
            if batch:
                alone = not self._handed_out
                self._handed_out.append(batch)
                # Handed to the executor now, not when a task first runs: an instance that frees up while
                # the loop is busy can then start it at once.
                running = loop.run_in_executor(self._executor, self._prepare_and_infer, batch, alone)
                task = loop.create_task(self._finish(batch, running), name=f"batch-{self.model}")
                self._runs.add(task)
                task.add_done_callback(self._runs.discard)
        self._metrics.queue_depth.labels(self.model).set(self._waiting())
        if not self._queue and not self._handed_out:
            self._idle.set()

    def _waiting(self) -> int:
        """Images not yet started: those queued and those in batches waiting for a busy instance."""
        return len(self._queue) + sum(len(batch) for batch in self._handed_out[self._instances :])

    def _count(self, key: BatchKey) -> int:
        return sum(1 for item in self._queue if item.key == key)

    def _take(self, key: BatchKey) -> list[_Item]:
        """Pop up to max_batch_size live items with `key`, keeping the others in order."""
        now = time.perf_counter()
        batch: list[_Item] = []
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            if now > item.deadline:
                _fail(item, ServiceError(504, "the request's deadline passed while it was queued"))
            elif item.key == key and len(batch) < self.config.max_batch_size:
                batch.append(item)
            else:
                kept.append(item)
        self._queue = kept
        return batch

    async def _finish(
        self, batch: list[_Item], running: asyncio.Future[tuple[list[Outcome | BaseException], float]]
    ) -> None:
        try:
            outcomes, seconds = await running
        except Exception as exc:  # the instance itself broke, not one image: fail the batch, keep serving
            log.exception("model %s: batch of %d failed", self.model, len(batch))
            outcomes = [ServiceError(500, f"inference failed: {exc}", code="inference_failed")] * len(batch)
            seconds = 0.0
        finally:
            self._handed_out = [other for other in self._handed_out if other is not batch]
        if seconds:
            per_image = seconds / len(batch)
            pace = self._seconds_per_image
            self._seconds_per_image = per_image if not pace else pace + PACE_WEIGHT * (per_image - pace)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _fail(item, outcome)
            elif not item.future.done():
                item.future.set_result(outcome)
        self._pump()

    def _prepare_and_infer(self, batch: list[_Item], alone: bool) -> tuple[list[Outcome | BaseException], float]:
        """On an instance thread: decode each image, then run the decoded ones together; also the seconds it took."""
        started = time.perf_counter()
        # Measured here, not when the batch was handed out: a batch may have waited for this instance.
        wait = self._metrics.queue_wait.labels(self.model)
        for item in batch:
            wait.observe(started - item.enqueued_at)
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
        return outcomes, time.perf_counter() - started  # type: ignore[return-value]  # every None was filled

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


def _fail(item: _Item, error: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(error)
