"""The request path: queue each image with the work that prepares it, batch, run, hand back per-image outputs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from .batching import Outcome, Prepare
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
    def __init__(self, codec_threads: int, max_image_pixels: int, metrics: Metrics) -> None:
        # Images are decoded on the model's instance threads; this pool parses and encodes big bodies.
        self._pool = ThreadPoolExecutor(max_workers=codec_threads, thread_name_prefix="codec")
        self._max_pixels = max_image_pixels
        self._metrics = metrics

    async def infer(
        self, served: Served, images: list[bytes], resolution: int, outputs: tuple[str, ...], started: float
    ) -> list[ImageResult]:
        """Outputs for every image, in order; the first bad image fails the request, naming its index."""
        variant = served.variant
        prepares: list[Prepare] = [partial(self._prepare_one, data, variant, resolution) for data in images]
        results = await self._through_batcher(served, prepares, resolution, outputs, started)
        return [ImageResult(image, result) for image, result in results]

    async def infer_tensors(
        self, served: Served, tensors: list[np.ndarray], resolution: int, outputs: tuple[str, ...], started: float
    ) -> list[list[np.ndarray]]:
        """Outputs for already-preprocessed float32 [3, resolution, resolution] tensors, through the same queue."""
        prepares: list[Prepare] = [partial(_as_is, tensor) for tensor in tensors]
        return [result for _, result in await self._through_batcher(served, prepares, resolution, outputs, started)]

    async def run_in_pool(self, function: Callable[..., T], *args: Any) -> T:
        """CPU-heavy post-processing, kept off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _through_batcher(
        self, served: Served, prepares: list[Prepare], resolution: int, outputs: tuple[str, ...], started: float
    ) -> list[Outcome]:
        batcher = served.batcher
        deadline = started + batcher.config.timeout_ms / 1000.0
        futures = batcher.submit(prepares, (resolution, outputs), deadline)
        done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - time.perf_counter()))
        for future in pending:
            future.cancel()
        for index, future in enumerate(futures):
            error = future.exception() if future in done else None
            if isinstance(error, ServiceError):
                raise error.with_index(index) if error.status < 500 else error
            if error is not None:
                raise error
        if pending:
            raise ServiceError(504, "the request's deadline passed before inference finished")
        return [future.result() for future in futures]

    def _prepare_one(self, data: bytes, variant: Variant, resolution: int) -> tuple[PreparedImage, np.ndarray]:
        """Runs on the model's instance thread, right before the image's inference."""
        started = time.perf_counter()
        try:
            prepared = prepare(data, variant.preprocess, resolution, self._max_pixels)
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(400, f"image could not be decoded ({exc})", code="bad_image") from exc
        self._metrics.preprocess_duration.labels(variant.name).observe(time.perf_counter() - started)
        return prepared, prepared.tensor


def _as_is(tensor: np.ndarray) -> tuple[None, np.ndarray]:
    return None, tensor
