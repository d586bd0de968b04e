"""The protocol-neutral core that REST and V2 share: find the model, run images or tensors, encode answers.

A request's images join the model's batch queue one by one; the first image that fails fails the
request, naming its index. Work too heavy for the event loop (large bodies, whole-image encoders)
goes to the codec pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from .auto_select import AutoSelector, Unavailable
from .config import Settings
from .errors import ServiceError
from .image_checks import open_image
from .instance import ImageJob, ImageResult
from .postprocess import Answer, Encoded
from .registry import LoadedModel, Registry, Status
from .server_timing import server_timing
from .store import Variant
from .tasks import Task, default_task, endpoint_tasks, task_for

T = TypeVar("T")


class Core:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._codec_pool = ThreadPoolExecutor(max_workers=settings.codec_threads, thread_name_prefix="codec")

    def auto_selector(self) -> AutoSelector:
        """What chooses for `model=auto`, or the error saying why this server cannot."""
        self._check_ready()
        auto = self.registry.auto
        if isinstance(auto, Unavailable):
            raise auto.error()
        assert auto is not None  # set before the registry is ready
        return auto

    def resolve_route(self, name: str | None, endpoint: str) -> tuple[LoadedModel, Task]:
        """The loaded model and the task a REST route runs on it: the route may serve several tasks (/detect's two)."""
        self._check_ready()
        state = self.registry.states.get(name) if name is not None else None
        if name is None:
            task = default_task(endpoint, self.registry.defaults)
        elif state is not None and state.loaded is not None:
            task = task_for(endpoint, state.loaded.variant)
        else:
            task = endpoint_tasks(endpoint)[0]
        return self.resolve(name, task), task

    def resolve(self, name: str | None, task: Task | None) -> LoadedModel:
        """The loaded model a request asked for (the task's default when None), or the error saying why not."""
        registry = self.registry
        self._check_ready()
        if name is None:
            name = registry.defaults[task.default] if task is not None else None
            if name is None:
                offered = task.name if task is not None else "anything"
                raise ServiceError(
                    404, f"no loaded model offers {offered}", code="unknown_model", available=registry.loaded_names()
                )
        state = registry.states.get(name)
        if state is None or state.status is Status.NOT_CONFIGURED:
            where = "is not in the model store" if state is None else "is in the store but not loaded by this server"
            raise ServiceError(
                404,
                f"model {name!r} {where}; available: {', '.join(registry.loaded_names())}",
                code="unknown_model",
                available=registry.loaded_names(),
            )
        if state.status is not Status.LOADED or state.loaded is None:
            raise ServiceError(
                503, f"model {name!r} is not available: {state.error or state.status.value}", code="model_unavailable"
            )
        variant = state.loaded.variant
        if task is not None and task.needs not in variant.tasks:
            offering = [m for t in endpoint_tasks(task.route) for m in registry.offering(t.needs)]
            raise ServiceError(
                400,
                f"model {name!r} does not support {task.route} (it offers {', '.join(sorted(variant.tasks))}); "
                f"models that do: {', '.join(offering) or 'none loaded'}",
                code="unsupported_task",
            )
        return state.loaded

    def _check_ready(self) -> None:
        if not self.registry.ready:
            raise ServiceError(
                503, "models are still loading; retry shortly", code="not_ready", headers={"Retry-After": "1"}
            )

    async def answer(
        self,
        task: Task,
        model: LoadedModel,
        resolution: int,
        images: list[bytes],
        started: float,
        deadline: float | None = None,
        **options: Any,
    ) -> Encoded:
        """Run a task on encoded images and encode its answer, by `deadline` (default: the model's timeout)."""
        if task.max_images is not None and len(images) > task.max_images:
            raise ServiceError(400, f"/{task.route} takes exactly one image, got {len(images)}", code="one_image_only")
        # The images were read since the model was resolved: a reload may have replaced it meanwhile.
        model = self.registry.live(model)
        deadline = _deadline(model, started, deadline)
        results = await self.run(model, images, resolution, task.outputs, started, deadline)
        encoded = await self._encode(task, Answer(model.variant, resolution, results), deadline, options)
        encoded.headers["Server-Timing"] = server_timing(results, time.perf_counter() - started)
        return encoded

    async def _encode(self, task: Task, answer: Answer, deadline: float, options: dict[str, Any]) -> Encoded:
        if not task.encode_off_loop:
            return task.encode(answer, **options)
        try:
            # The request's deadline covers its encoding too; a pool thread past it finishes unwatched.
            encoding = self.in_pool(lambda: task.encode(answer, **options))
            return await asyncio.wait_for(encoding, max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            raise ServiceError(504, "the request's deadline passed while its answer was encoded") from None

    async def run(
        self,
        model: LoadedModel,
        sources: Sequence[bytes | np.ndarray],
        resolution: int,
        outputs: tuple[str, ...],
        started: float,
        deadline: float | None = None,
    ) -> list[ImageResult]:
        """Outputs for encoded images or preprocessed float32 [3, S, S] tensors, in order, through the batch queue."""
        deadline = _deadline(model, started, deadline)
        opened = [self._admitted(index, source) for index, source in enumerate(sources)]
        jobs = [
            await self._job(index, model, source, image, resolution, outputs, deadline)
            for index, (source, image) in enumerate(zip(sources, opened, strict=True))
        ]
        model = self.registry.live(model)  # as in answer(): for the V2 protocol, which calls run() itself
        futures = model.batcher.submit(jobs, (resolution, outputs), deadline)
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

    def _admitted(self, index: int, source: bytes | np.ndarray) -> Image.Image | None:
        """An encoded image opened once its structure and declared size are checked: before it may queue."""
        if not isinstance(source, bytes):
            return None
        try:
            return open_image(source, self.settings.max_image_pixels)
        except ServiceError as error:
            raise error.with_index(index) from None

    async def _job(
        self,
        index: int,
        model: LoadedModel,
        source: bytes | np.ndarray,
        image: Image.Image | None,
        resolution: int,
        outputs: tuple[str, ...],
        deadline: float,
    ) -> ImageJob:
        """The image's job for the batch queue: a large image is decoded first (large_images.py), the rest in batch."""
        large = self.registry.large_images
        spec = model.variant.preprocess
        if image is None or large is None or not large.is_large(image, spec, resolution):
            return ImageJob(source, resolution, outputs)
        assert isinstance(source, bytes)
        try:
            tensor, size = await large.prepare(source, spec, resolution, model.variant.name, deadline)
        except ServiceError as error:
            raise error.with_index(index) if error.status < 500 else error from None
        return ImageJob(tensor, resolution, outputs, size)

    async def in_pool(self, function: Callable[..., T], *args: Any) -> T:
        """CPU-heavy parsing or encoding, kept off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._codec_pool, function, *args)

    def close(self) -> None:
        self._codec_pool.shutdown(wait=True, cancel_futures=True)


def _deadline(model: LoadedModel, started: float, given: float | None) -> float:
    """When a request that started at `started` must be answered, queueing, running and encoding included: `given`,
    or the model's timeout."""
    return started + model.batcher.config.timeout_ms / 1000.0 if given is None else given


def resolution_for(variant: Variant, resolution: int | None, status: int = 422) -> int:
    """The input size to run: the variant's native one, or a requested one it offers."""
    if resolution is None:
        return variant.native_resolution
    if isinstance(resolution, bool) or resolution not in variant.resolutions:
        raise ServiceError(
            status,
            f"resolution {resolution!r} is not offered by {variant.name}; choose one of {list(variant.resolutions)}",
            code="invalid_parameter",
        )
    return int(resolution)
