"""The per-model dynamic batcher: a bounded queue whose images are stacked into one ONNX Runtime run.

Like Triton's dynamic batcher, a batch closes when it holds `max_batch_size` images or when its
oldest image has waited `max_queue_delay_ms`. It waits only while more images for the model are
on their way (admitted and still being decoded): a lone request is never delayed for company that
cannot come. Images are grouped by (resolution, outputs), since only those can share a tensor.
A single image for an idle model skips the queue: it is decoded and run in one hand-off to the
inference thread (`run_alone`), which is what the queue would have done, minus two thread wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .config import BatchingConfig
from .errors import ServiceError
from .metrics import Metrics
from .runtime import ModelSession

log = logging.getLogger("mobilenet_serve.batching")

BatchKey = tuple[int, tuple[str, ...]]
T = TypeVar("T")


@dataclass(eq=False)
class _Item:
    tensor: np.ndarray
    key: BatchKey
    future: asyncio.Future[list[np.ndarray]]
    enqueued_at: float
    deadline: float


@dataclass(eq=False)
class Reservation:
    """Queue capacity held for a request's images while they are decoded."""

    batcher: DynamicBatcher
    count: int
    open: bool = field(default=True)

    def release(self) -> None:
        if self.open:
            self.open = False
            self.batcher._unreserve(self.count)


class DynamicBatcher:
    def __init__(self, model: str, session: ModelSession, config: BatchingConfig, metrics: Metrics) -> None:
        self.model = model
        self.config = config
        self._session = session
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._expected = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{model}")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.model}")

    def reserve(self, count: int) -> Reservation:
        """Admit `count` images or refuse at once: the queue never grows past max_queue_size."""
        if self._closing:
            raise ServiceError(503, "the server is shutting down", code="shutting_down")
        if count > self.config.max_queue_size:
            raise ServiceError(
                413, f"{count} images exceed the {self.config.max_queue_size} that model {self.model} can queue"
            )
        if len(self._queue) + self._expected + count > self.config.max_queue_size:
            raise ServiceError(
                429,
                f"model {self.model} has {self.config.max_queue_size} images queued; retry later",
                headers={"Retry-After": str(self._retry_after_seconds())},
            )
        self._expected += count
        return Reservation(self, count)

    def submit(
        self, reservation: Reservation, tensors: list[np.ndarray], key: BatchKey, deadline: float
    ) -> list[asyncio.Future[list[np.ndarray]]]:
        """Queue a request's images together; each future resolves to that image's outputs."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures = []
        for tensor in tensors:
            future: asyncio.Future[list[np.ndarray]] = loop.create_future()
            self._queue.append(_Item(tensor, key, future, now, deadline))
            futures.append(future)
        reservation.release()
        self._metrics.queue_depth.labels(self.model).set(len(self._queue))
        self._idle.clear()
        self._wakeup.set()
        return futures

    def alone(self, reservation: Reservation) -> bool:
        """True when the reserving request is all the work this model has: nothing queued, running or decoding."""
        return not self._queue and not self._running and self._expected == reservation.count

    async def run_alone(
        self, prepare: Callable[[], tuple[T, np.ndarray]], outputs: tuple[str, ...]
    ) -> tuple[T, list[np.ndarray]]:
        """Decode and run one image in a single hand-off to the inference thread.

        An idle model has nothing to overlap the decode with, and one hand-off instead of two saves
        two thread wake-ups of latency. Requests arriving meanwhile take the queue as usual.
        """
        self._running = True
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._prepare_and_infer, prepare, outputs
            )
        finally:
            self._running = False
            if self._queue:
                self._wakeup.set()

    async def drain(self, timeout: float) -> None:
        """Refuse new work, finish what is queued, then stop the inference thread."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("model %s: %d images still queued at shutdown", self.model, len(self._queue))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(ServiceError(503, "the server is shutting down", code="shutting_down"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    async def warm_up(self, tensor: np.ndarray, outputs: tuple[str, ...]) -> None:
        """One run outside the queue, so the first request does not pay for ORT's lazy allocations."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._session.run, tensor[None], outputs)

    def _unreserve(self, count: int) -> None:
        self._expected -= count
        if self._expected == 0:
            self._wakeup.set()

    def _retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.config.max_queue_delay_ms / 1000.0))

    async def _serve(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            self._metrics.queue_depth.labels(self.model).set(len(self._queue))
            if batch:
                await self._run(batch)

    async def _collect(self) -> list[_Item]:
        first = self._queue[0]
        close_at = first.enqueued_at + self.config.max_queue_delay_ms / 1000.0
        while self._expected > 0 and self._count(first.key) < self.config.max_batch_size:
            remaining = close_at - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return self._take(first.key)

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
                item.future.set_exception(ServiceError(504, "the request's deadline passed while it was queued"))
            elif item.key == key and len(batch) < self.config.max_batch_size:
                batch.append(item)
            else:
                kept.append(item)
        self._queue = kept
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        wait = self._metrics.queue_wait.labels(self.model)
        for item in batch:
            wait.observe(started - item.enqueued_at)
        outputs = batch[0].key[1]
        loop = asyncio.get_running_loop()
        self._running = True
        try:
            results = await loop.run_in_executor(self._executor, self._infer, [i.tensor for i in batch], outputs)
        except Exception as exc:
            if len(batch) == 1:
                log.error("model %s: inference failed: %s", self.model, exc)
                _resolve_error(batch[0], ServiceError(500, f"inference failed: {exc}", code="inference_failed"))
                return
            # Isolate the failure: rerun the images one by one so only a culprit fails.
            for item in batch:
                await self._run([item])
            return
        finally:
            self._running = False
        for index, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result([output[index] for output in results])

    def _prepare_and_infer(
        self, prepare: Callable[[], tuple[T, np.ndarray]], outputs: tuple[str, ...]
    ) -> tuple[T, list[np.ndarray]]:
        prepared, tensor = prepare()
        self._metrics.queue_wait.labels(self.model).observe(0.0)
        return prepared, [output[0] for output in self._infer([tensor], outputs)]

    def _infer(self, tensors: list[np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        stacked = np.stack(tensors) if len(tensors) > 1 else tensors[0][None]
        started = time.perf_counter()
        results = self._session.run(stacked, outputs)
        self._metrics.inference_duration.labels(self.model).observe(time.perf_counter() - started)
        self._metrics.batch_size.labels(self.model).observe(len(tensors))
        return results


def _resolve_error(item: _Item, error: Exception) -> None:
    if not item.future.done():
        item.future.set_exception(error)
