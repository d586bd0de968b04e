"""Dynamic batching: observed through the metrics, equal to unbatched runs, bounded, with deadlines."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers_service import (
    DEEPLAB_SMALL,
    IMAGES,
    STORE,
    TV_INT8,
    V1,
    V1_SMALL,
    ServerProcess,
    content_type,
    image_bytes,
    runs_larger_than_one,
    start_server,
)

from service.batching import DynamicBatcher, Outcome, Prepare
from service.config import BatchingConfig
from service.errors import ServiceError
from service.metrics import Metrics
from service.preprocess import prepare
from service.runtime import ModelSession
from service.store import parse_variant

PHOTOS = ["cat.png", "parrot.jpg", "hot_dog.jpg", "owl.jpg", "pets.jpg", "bird.png", "sunflower.png", "dragonfly.png"]


def embed(http: httpx.Client, name: str, model: str) -> np.ndarray:
    response = http.post(
        "/embed",
        params={"model": model, "normalize": "false"},
        content=image_bytes(name),
        headers={"Content-Type": content_type(name)},
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["results"][0]["embedding"], dtype=np.float32)


def test_concurrent_requests_are_batched_and_equal_unbatched(server: ServerProcess, client: httpx.Client) -> None:
    singles = {name: embed(client, name, TV_INT8) for name in PHOTOS}
    before = runs_larger_than_one(client.get("/metrics").text, TV_INT8)

    def one(name: str) -> np.ndarray:
        with server.client() as http:
            return embed(http, name, TV_INT8)

    names = PHOTOS * 4
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        batched = list(pool.map(one, names))
    after = runs_larger_than_one(client.get("/metrics").text, TV_INT8)
    assert after > before, "32 concurrent requests should share at least one ONNX Runtime run"
    for name, vector in zip(names, batched, strict=True):
        np.testing.assert_allclose(vector, singles[name], rtol=1e-4, atol=1e-3)


def test_multi_image_request_is_one_run_equal_to_singles(client: httpx.Client) -> None:
    files = [("file", (name, image_bytes(name), content_type(name))) for name in PHOTOS]
    before = runs_larger_than_one(client.get("/metrics").text, V1)
    response = client.post("/embed", params={"model": V1, "normalize": "false"}, files=files)
    assert response.status_code == 200, response.text
    assert runs_larger_than_one(client.get("/metrics").text, V1) == before + 1
    vectors = [np.asarray(r["embedding"], dtype=np.float32) for r in response.json()["results"]]
    for name, vector in zip(PHOTOS, vectors, strict=True):
        np.testing.assert_allclose(vector, embed(client, name, V1), rtol=1e-4, atol=1e-3)


def test_different_resolutions_do_not_share_a_run(server: ServerProcess) -> None:
    def classify(resolution: int) -> dict:
        with server.client() as http:
            response = http.post(
                "/classify", params={"model": V1, "resolution": resolution}, content=image_bytes("parrot.jpg"),
                headers={"Content-Type": "image/jpeg"},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            return response.json()

    alone = {resolution: classify(resolution) for resolution in (128, 160, 224)}
    with ThreadPoolExecutor(max_workers=12) as pool:
        bodies = list(pool.map(classify, [128, 160, 224] * 4))
    for body in bodies:
        expected = alone[body["resolution"]]["results"][0]["predictions"]
        got = body["results"][0]["predictions"]
        assert [p["class_id"] for p in got] == [p["class_id"] for p in expected]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in expected], abs=1e-4)
    assert [b["resolution"] for b in bodies] == [128, 160, 224] * 4


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory):
    """A server with a two-image queue for DeepLab and a 1 ms deadline for the small V1."""
    config = {
        "models": [DEEPLAB_SMALL, V1_SMALL],
        "intra_op_threads": 2,
        "batching": {
            DEEPLAB_SMALL: {"max_batch_size": 1, "max_queue_delay_ms": 0, "max_queue_size": 2, "timeout_ms": 60_000},
            V1_SMALL: {"max_batch_size": 4, "max_queue_delay_ms": 1, "max_queue_size": 16, "timeout_ms": 1},
        },
    }
    process = start_server(tmp_path_factory.mktemp("tight"), config)
    yield process
    process.stop(signal.SIGTERM)


def test_full_queue_answers_429_with_retry_after(tight_server: ServerProcess) -> None:
    data = image_bytes("cat_720p.jpg")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tight_server.url, timeout=120) as http:
            return await asyncio.gather(
                *(http.post("/segment", content=data, headers={"Content-Type": "image/jpeg"}) for _ in range(16))
            )

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 1 and codes.count(200) >= 2
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"
    with tight_server.client() as http:
        assert http.post("/segment", content=data, headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_request_past_its_deadline_gets_504(tight_server: ServerProcess) -> None:
    with tight_server.client() as http:
        response = http.post(
            "/classify",
            params={"model": V1_SMALL},
            content=image_bytes("cat_720p.jpg"),
            headers={"Content-Type": "image/jpeg"},
        )
        assert response.status_code == 504, response.text
        assert "deadline" in response.json()["error"]["message"]
        assert http.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def v1_small_session() -> ModelSession:
    return ModelSession(STORE / V1_SMALL / "model.onnx", threads=2, instances=2)


def _tensors(count: int) -> list[np.ndarray]:
    spec = parse_variant(STORE / V1_SMALL).preprocess
    return [prepare((IMAGES / name).read_bytes(), spec, 128, 10**9).tensor for name in PHOTOS[:count]]


def _ready(tensor: np.ndarray) -> Prepare:
    return lambda: (None, tensor)


def test_batcher_stacks_and_resolves_each_future(v1_small_session: ModelSession) -> None:
    metrics = Metrics()
    tensors = _tensors(6)
    singles = [v1_small_session.run(t[None], ("logits",))[0][0] for t in tensors]

    async def scenario() -> list[Outcome]:
        # One instance and a long delay: the six images queue together and close as a full batch of 4, then 2.
        config = BatchingConfig(
            instances=1, max_batch_size=4, max_queue_delay_ms=50, max_queue_size=8, timeout_ms=10_000
        )
        batcher = DynamicBatcher(V1_SMALL, v1_small_session, config, metrics)
        deadline = time.perf_counter() + 60
        futures = batcher.submit([_ready(t) for t in tensors], (128, ("logits",)), deadline)
        results = await asyncio.gather(*futures)
        await batcher.drain(5.0)
        return results

    results = asyncio.run(scenario())
    for (_, outputs), single in zip(results, singles, strict=True):
        np.testing.assert_allclose(outputs[0], single, rtol=1e-5, atol=1e-4)
    sizes = metrics.registry.get_sample_value("mobilenet_batch_size_sum", {"model": V1_SMALL})
    runs = metrics.registry.get_sample_value("mobilenet_batch_size_count", {"model": V1_SMALL})
    assert (sizes, runs) == (6, 2)


def test_instances_run_batches_side_by_side(v1_small_session: ModelSession) -> None:
    """Two instances: while one is busy preparing its image, the other takes the next batch."""
    tensors = _tensors(2)
    started: list[float] = []

    def slow(tensor: np.ndarray) -> Prepare:
        def prepare_slowly() -> tuple[None, np.ndarray]:
            started.append(time.perf_counter())
            time.sleep(0.3)
            return None, tensor

        return prepare_slowly

    async def scenario() -> float:
        config = BatchingConfig(instances=2, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
        batcher = DynamicBatcher(V1_SMALL, v1_small_session, config, Metrics())
        began = time.perf_counter()
        futures = batcher.submit([slow(t) for t in tensors], (128, ("logits",)), began + 60)
        await asyncio.gather(*futures)
        await batcher.drain(5.0)
        return time.perf_counter() - began

    elapsed = asyncio.run(scenario())
    assert len(started) == 2 and abs(started[1] - started[0]) < 0.2, started
    assert elapsed < 0.55, elapsed


def _blocking(tensor: np.ndarray) -> tuple[Prepare, threading.Event, threading.Event]:
    """A Prepare that signals `taken` when an instance starts it, then waits for `release`."""
    taken, release = threading.Event(), threading.Event()

    def blocked() -> tuple[None, np.ndarray]:
        taken.set()
        release.wait(10)
        return None, tensor

    return blocked, taken, release


def test_batcher_refuses_past_its_bound(v1_small_session: ModelSession) -> None:
    blocked, taken, release = _blocking(_tensors(1)[0])

    async def scenario() -> None:
        config = BatchingConfig(instances=1, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=3)
        batcher = DynamicBatcher(V1_SMALL, v1_small_session, config, Metrics())
        key, deadline = (128, ("logits",)), time.perf_counter() + 60
        running = batcher.submit([blocked], key, deadline)
        assert await asyncio.to_thread(taken.wait, 10)  # the one instance is busy with it, not queued
        queued = batcher.submit([blocked] * 3, key, deadline)
        with pytest.raises(ServiceError) as caught:
            batcher.submit([blocked], key, deadline)
        assert caught.value.status == 429 and caught.value.headers and "Retry-After" in caught.value.headers
        with pytest.raises(ServiceError) as too_many:
            batcher.submit([blocked] * 4, key, deadline)
        assert too_many.value.status == 413
        release.set()
        await asyncio.gather(*running, *queued)
        await batcher.drain(1.0)
        with pytest.raises(ServiceError) as closed:
            batcher.submit([blocked], key, deadline)
        assert closed.value.status == 503

    asyncio.run(scenario())


def test_a_full_batch_waits_for_a_busy_instance_and_starts_without_the_event_loop(
    v1_small_session: ModelSession,
) -> None:
    """One instance, busy: the next full batch is handed out ahead and starts while the loop is blocked."""
    tensor = _tensors(1)[0]
    blocked, taken, release = _blocking(tensor)
    ahead_started = threading.Event()

    def ahead() -> tuple[None, np.ndarray]:
        ahead_started.set()
        return None, tensor

    async def scenario() -> tuple[bool, float | None, float | None]:
        config = BatchingConfig(instances=1, max_batch_size=2, max_queue_delay_ms=0, max_queue_size=8)
        metrics = Metrics()
        batcher = DynamicBatcher(V1_SMALL, v1_small_session, config, metrics)
        key, deadline = (128, ("logits",)), time.perf_counter() + 60
        running = batcher.submit([blocked], key, deadline)
        assert await asyncio.to_thread(taken.wait, 10)
        full = batcher.submit([ahead, ahead], key, deadline)
        partial = batcher.submit([ahead], key, deadline)  # not a full batch: it stays in the loop's queue
        depth = metrics.registry.get_sample_value("mobilenet_queue_depth", {"model": V1_SMALL})
        release.set()
        # The event loop is blocked here, so only the instance itself can start the batch handed out ahead.
        started_while_blocked = ahead_started.wait(10)
        await asyncio.gather(*running, *full, *partial)
        await batcher.drain(1.0)
        runs = metrics.registry.get_sample_value("mobilenet_batch_size_count", {"model": V1_SMALL})
        return started_while_blocked, runs, depth

    started_while_blocked, runs, depth = asyncio.run(scenario())
    assert started_while_blocked
    assert runs == 3  # 1, then the full 2 handed out ahead, then the 1 that waited in the queue
    assert depth == 3  # images not yet started: the two handed out ahead and the one queued


def test_retry_after_is_when_the_queue_will_have_drained(v1_small_session: ModelSession) -> None:
    """Queued images times the recent time per image, over the instances: 6 x 0.4 s on one instance."""
    tensor = _tensors(1)[0]
    blocked, taken, release = _blocking(tensor)

    def slow() -> tuple[None, np.ndarray]:
        time.sleep(0.4)
        return None, tensor

    async def scenario() -> str:
        config = BatchingConfig(instances=1, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=6)
        batcher = DynamicBatcher(V1_SMALL, v1_small_session, config, Metrics())
        key, deadline = (128, ("logits",)), time.perf_counter() + 60
        await asyncio.gather(*batcher.submit([slow], key, deadline))  # sets the pace
        running = batcher.submit([blocked], key, deadline)
        assert await asyncio.to_thread(taken.wait, 10)
        queued = batcher.submit([blocked] * 6, key, deadline)
        with pytest.raises(ServiceError) as caught:
            batcher.submit([blocked], key, deadline)
        release.set()
        await asyncio.gather(*running, *queued)
        await batcher.drain(1.0)
        assert caught.value.status == 429 and caught.value.headers
        return caught.value.headers["Retry-After"]

    assert asyncio.run(scenario()) in {"3", "4"}  # 2.4 s and a little for the runs, in whole seconds


def _outcomes_of_three(session: ModelSession, prepares: list[Prepare]) -> list[object]:
    """The outcome of each of three images queued together into one batch."""

    async def scenario() -> list[object]:
        config = BatchingConfig(instances=1, max_batch_size=4, max_queue_delay_ms=20)
        batcher = DynamicBatcher(V1_SMALL, session, config, Metrics())
        futures = batcher.submit(prepares, (128, ("logits",)), time.perf_counter() + 60)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.drain(1.0)
        return outcomes

    return asyncio.run(scenario())


def test_failed_run_is_isolated_per_item(v1_small_session: ModelSession) -> None:
    """A batch whose run fails is retried image by image, so only the culprit fails."""
    good = _tensors(2)
    poison = np.zeros((4, 128, 128), dtype=np.float32)  # four channels: neither stackable nor runnable

    outcomes = _outcomes_of_three(v1_small_session, [_ready(good[0]), _ready(poison), _ready(good[1])])
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[2], tuple)
    assert isinstance(outcomes[1], ServiceError) and outcomes[1].status == 500


def test_failed_preparation_fails_only_its_image(v1_small_session: ModelSession) -> None:
    good = _tensors(2)

    def broken() -> tuple[None, np.ndarray]:
        raise ServiceError(400, "the body is not a decodable image", code="bad_image")

    outcomes = _outcomes_of_three(v1_small_session, [_ready(good[0]), broken, _ready(good[1])])
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[2], tuple)
    assert isinstance(outcomes[1], ServiceError) and outcomes[1].status == 400
