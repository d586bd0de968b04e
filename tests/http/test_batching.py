"""Dynamic batching over HTTP: observed through the metrics, equal to unbatched runs, bounded, with deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from harness import ServerProcess, running_server
from support import DEEPLAB_SMALL, PHOTOS, TV_INT8, V1, V1_SMALL, content_type, image_bytes, runs_larger_than_one


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
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a two-image queue for DeepLab and a 1 ms deadline for the small V1."""
    config = {
        "models": [DEEPLAB_SMALL, V1_SMALL],
        "intra_op_threads": 2,
        "batching": {
            DEEPLAB_SMALL: {"max_batch_size": 1, "max_queue_delay_ms": 0, "max_queue_size": 2, "timeout_ms": 60_000},
            V1_SMALL: {"max_batch_size": 4, "max_queue_delay_ms": 1, "max_queue_size": 16, "timeout_ms": 1},
        },
    }
    with running_server(tmp_path_factory.mktemp("tight"), config) as process:
        yield process


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
