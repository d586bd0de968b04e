"""The core's own rules, with a fake runner: a task's image limit, and the deadline over its encoding."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np
from support import STORE, V1_SMALL

from service.batcher import Batcher, BatchResult, Queued
from service.config import BatchingConfig, Settings
from service.core import Core
from service.errors import ServiceError
from service.instance import ImageResult
from service.postprocess import Answer, Encoded
from service.registry import LoadedModel, ModelState, Registry, Status
from service.store import parse_variant
from service.tasks import TASKS

VARIANT = parse_variant(STORE / V1_SMALL)


def _answer(
    task_name: str, images: list[bytes], timeout_ms: float = 10_000, **changes: Any
) -> tuple[Any, float, list[int]]:
    """What Core.answer returns or raises, how long it took, and how many images the fake runner ran."""
    ran: list[int] = []

    def run_batch(batch: list[Queued[Any]], alone: bool) -> asyncio.Future[BatchResult]:
        ran.append(len(batch))
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        logits = [ImageResult([np.zeros(1001, dtype=np.float32)], (10, 10)) for _ in batch]
        future.set_result(BatchResult(logits, 0.001))  # type: ignore[arg-type]
        return future

    async def scenario() -> tuple[Any, float]:
        settings = Settings(models=[V1_SMALL])
        core = Core(settings, Registry(settings, None))  # type: ignore[arg-type]
        batcher = Batcher(V1_SMALL, BatchingConfig(instances=1, timeout_ms=timeout_ms), run_batch, 1)
        model = LoadedModel(VARIANT, batcher, None)  # type: ignore[arg-type]
        core.registry.states[V1_SMALL] = ModelState(V1_SMALL, VARIANT, Status.LOADED, loaded=model)
        task = dataclasses.replace(TASKS[task_name], **changes)
        options = {"k": 1} if task_name == "classify" else {}
        started = time.perf_counter()
        try:
            outcome: Any = await core.answer(task, model, 128, images, started, **options)
        except ServiceError as error:
            outcome = error
        elapsed = time.perf_counter() - started
        core.close()
        return outcome, elapsed

    outcome, elapsed = asyncio.run(scenario())
    return outcome, elapsed, ran


PNG = (STORE.parent / "tests" / "data" / "images" / "cat.png").read_bytes()


def test_a_task_of_one_image_refuses_more_before_running_any() -> None:
    error, _, ran = _answer("classify", [PNG, PNG], max_images=1)
    assert isinstance(error, ServiceError) and error.status == 400 and error.code == "one_image_only"
    assert ran == []


def test_an_encoding_past_the_request_deadline_gets_504() -> None:
    def slow(answer: Answer, k: int) -> Encoded:
        time.sleep(1.0)
        return Encoded(b"{}", "application/json")

    error, elapsed, ran = _answer("classify", [PNG], timeout_ms=300, encode=slow, encode_off_loop=True)
    assert isinstance(error, ServiceError) and error.status == 504, error
    assert elapsed < 0.9
    assert ran == [1]
