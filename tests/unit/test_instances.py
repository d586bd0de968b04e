"""A model's instances with a real session: decode on the instance, stack, run, and fail only the culprit."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from support import IMAGES, PHOTOS, STORE, V1_SMALL

from service.batcher import Batcher
from service.config import BatchingConfig
from service.cpu_shares import CpuShares
from service.errors import ServiceError
from service.instance import ImageJob, ImageResult, ModelInstances, ModelSession
from service.metrics import Metrics
from service.preprocess import prepare
from service.store import parse_variant

VARIANT = parse_variant(STORE / V1_SMALL)
LOGITS = ("logits",)


@pytest.fixture(scope="module")
def v1_small_session() -> ModelSession:
    return ModelSession(STORE / V1_SMALL / "model.onnx", threads=2)


def _encoded(count: int) -> list[bytes]:
    return [(IMAGES / name).read_bytes() for name in PHOTOS[:count]]


def _run(session: ModelSession, sources: list[bytes | np.ndarray], metrics: Metrics | None = None) -> list[object]:
    """Each source's outcome, all queued together into one batch of one instance."""

    async def scenario() -> list[object]:
        shares = CpuShares(2, None)
        instances = ModelInstances(VARIANT, session, 1, 10**9, metrics or Metrics(), shares)
        batcher = Batcher(
            V1_SMALL, BatchingConfig(instances=1, max_batch_size=8, max_queue_delay_ms=20), instances.run_batch, 1
        )
        shares.add(V1_SMALL, lambda: batcher.in_flight)
        jobs = [ImageJob(source, 128, LOGITS) for source in sources]
        futures = batcher.submit(jobs, (128, LOGITS), time.perf_counter() + 60)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.drain(1.0)
        instances.close()
        return outcomes

    return asyncio.run(scenario())


def test_a_batch_decodes_on_the_instance_and_equals_the_images_run_alone(v1_small_session: ModelSession) -> None:
    metrics = Metrics()
    encoded = _encoded(6)
    outcomes = _run(v1_small_session, list(encoded), metrics)
    for data, outcome in zip(encoded, outcomes, strict=True):
        assert isinstance(outcome, ImageResult)
        image = prepare(data, VARIANT.preprocess, 128, 10**9)
        single = v1_small_session.run(image.tensor[None], LOGITS)[0][0]
        np.testing.assert_allclose(outcome.outputs[0], single, rtol=1e-5, atol=1e-4)
        assert outcome.original_size == image.original_size
    sizes = metrics.registry.get_sample_value("mobilenet_batch_size_sum", {"model": V1_SMALL})
    runs = metrics.registry.get_sample_value("mobilenet_batch_size_count", {"model": V1_SMALL})
    decoded = metrics.registry.get_sample_value("mobilenet_preprocess_duration_seconds_count", {"model": V1_SMALL})
    assert (sizes, runs, decoded) == (6, 1, 6)


def test_a_failed_run_is_retried_image_by_image_so_only_the_culprit_fails(v1_small_session: ModelSession) -> None:
    good = [prepare(data, VARIANT.preprocess, 128, 10**9).tensor for data in _encoded(2)]
    poison = np.zeros((4, 128, 128), dtype=np.float32)  # four channels: neither stackable nor runnable
    outcomes = _run(v1_small_session, [good[0], poison, good[1]])
    assert isinstance(outcomes[0], ImageResult) and isinstance(outcomes[2], ImageResult)
    assert isinstance(outcomes[1], ServiceError) and outcomes[1].status == 500


def test_an_image_that_cannot_be_decoded_fails_alone(v1_small_session: ModelSession) -> None:
    good = _encoded(2)
    outcomes = _run(v1_small_session, [good[0], b"not an image", good[1]])
    assert isinstance(outcomes[0], ImageResult) and isinstance(outcomes[2], ImageResult)
    assert isinstance(outcomes[1], ServiceError) and outcomes[1].status == 400
