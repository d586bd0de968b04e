"""The request path: decode and preprocess in a thread pool, batch, run, hand back per-image outputs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .errors import ServiceError
from .metrics import Metrics
from .preprocess import PreparedImage, prepare
from .registry import Served
from .store import Variant

T = TypeVar("T")


@dataclass(frozen=True)
class ImageResult:
    image: PreparedImage
    outputs: list[np.ndarray]  # in the order of the requested output names


class Pipeline:
    def __init__(self, decode_threads: int, max_image_pixels: int, metrics: Metrics) -> None:
        # Pillow and NumPy release the GIL, so these threads decode while the event loop serves sockets.
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
        self._max_pixels = max_image_pixels
        self._metrics = metrics

    async def infer(
        self, served: Served, images: list[bytes], resolution: int, outputs: tuple[str, ...], started: float
    ) -> list[ImageResult]:
        """Outputs for every image, in order; the first bad image fails the request, naming its index."""
        batcher = served.batcher
        deadline = started + batcher.config.timeout_ms / 1000.0
        reservation = batcher.reserve(len(images))
        try:
            if len(images) == 1 and batcher.alone(reservation):
                # Released first: this image will never join the queue, so nobody should wait for it.
                reservation.release()
                return [await self._run_alone(served, images[0], resolution, outputs, deadline)]
            prepared = await self._prepare_all(served.variant, images, resolution)
            if time.perf_counter() > deadline:
                raise ServiceError(504, "the request's deadline passed while its images were decoded")
            futures = batcher.submit(reservation, [p.tensor for p in prepared], (resolution, outputs), deadline)
        finally:
            reservation.release()
        results = await _gather_before(futures, deadline)
        return [ImageResult(image, result) for image, result in zip(prepared, results, strict=True)]

    async def infer_tensors(
        self, served: Served, tensors: list[np.ndarray], resolution: int, outputs: tuple[str, ...], started: float
    ) -> list[list[np.ndarray]]:
        """Outputs for already-preprocessed float32 [3, resolution, resolution] tensors, through the same queue."""
        batcher = served.batcher
        deadline = started + batcher.config.timeout_ms / 1000.0
        reservation = batcher.reserve(len(tensors))
        try:
            futures = batcher.submit(reservation, tensors, (resolution, outputs), deadline)
        finally:
            reservation.release()
        return await _gather_before(futures, deadline)

    async def run_in_pool(self, function: Callable[..., T], *args: Any) -> T:
        """CPU-heavy post-processing, kept off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _prepare_all(self, variant: Variant, images: list[bytes], resolution: int) -> list[PreparedImage]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, self._prepare_one, data, variant, resolution) for data in images]
        prepared = await asyncio.gather(*jobs, return_exceptions=True)
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, ServiceError):
                raise outcome.with_index(index)
            if isinstance(outcome, BaseException):
                raise ServiceError(400, f"image could not be decoded ({outcome})", code="bad_image").with_index(index)
        return prepared  # type: ignore[return-value]

    async def _run_alone(
        self, served: Served, data: bytes, resolution: int, outputs: tuple[str, ...], deadline: float
    ) -> ImageResult:
        def prepare() -> tuple[PreparedImage, np.ndarray]:
            prepared = self._prepare_one(data, served.variant, resolution)
            return prepared, prepared.tensor

        try:
            image, results = await served.batcher.run_alone(prepare, outputs)
        except ServiceError as error:
            raise error.with_index(0) from None
        if time.perf_counter() > deadline:
            raise ServiceError(504, "the request's deadline passed before inference finished")
        return ImageResult(image, results)

    def _prepare_one(self, data: bytes, variant: Variant, resolution: int) -> PreparedImage:
        started = time.perf_counter()
        prepared = prepare(data, variant.preprocess, resolution, self._max_pixels)
        self._metrics.preprocess_duration.labels(variant.name).observe(time.perf_counter() - started)
        return prepared


async def _gather_before(futures: list[asyncio.Future[list[np.ndarray]]], deadline: float) -> list[list[np.ndarray]]:
    done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - time.perf_counter()))
    for future in pending:
        future.cancel()
    errors = [future.exception() for future in futures if future in done]
    if pending:
        raise ServiceError(504, "the request's deadline passed before inference finished")
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]
