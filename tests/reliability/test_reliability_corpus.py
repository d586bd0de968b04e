"""The committed nasty-image corpus against the real server: each file gets its documented error or a result.

`tests/data/nasty/expected.json` (written by make_corpus.py) lists the statuses each file may get; anything
else, a 500 above all, fails. The server must still serve a good image afterwards.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import ServerProcess, running_server
from support import DATA, DEEPLAB_SMALL, V1_SMALL, image_bytes

NASTY = DATA / "nasty"
EXPECTED: dict[str, dict[str, Any]] = json.loads((NASTY / "expected.json").read_text(encoding="utf-8"))
CONFIG = {
    "models": [V1_SMALL, DEEPLAB_SMALL],
    "default_model": V1_SMALL,
    "max_body_bytes": 4 * 1024 * 1024,
    "max_image_pixels": 30_000_000,
    "intra_op_threads": 2,
}


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("corpus"), CONFIG) as process:
        yield process


@pytest.fixture()
def http(corpus_server: ServerProcess) -> Iterator[httpx.Client]:
    with corpus_server.client() as client:
        yield client


def test_corpus_is_complete_and_small() -> None:
    files = {p.name for p in NASTY.iterdir() if p.name not in ("expected.json", "make_corpus.py")}
    assert files == set(EXPECTED)
    assert sum((NASTY / name).stat().st_size for name in files) < 300_000


def _check(response: httpx.Response, name: str) -> None:
    allowed = EXPECTED[name]["statuses"]
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["code"] and error["message"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("endpoint", ["/classify", "/embed", "/detect"])
def test_raw_body(http: httpx.Client, name: str, endpoint: str) -> None:
    data = (NASTY / name).read_bytes()
    response = http.post(endpoint, content=data, headers={"Content-Type": EXPECTED[name]["content_type"]})
    _check(response, name)


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if EXPECTED[n]["statuses"] != [415]))
def test_multipart_part(http: httpx.Client, name: str) -> None:
    data = (NASTY / name).read_bytes()
    response = http.post("/classify", files={"file": (name, data, EXPECTED[name]["content_type"])})
    _check(response, name)


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if EXPECTED[n]["statuses"] != [415]))
def test_v2_image_bytes(http: httpx.Client, name: str) -> None:
    data = (NASTY / name).read_bytes()
    encoded = base64.b64encode(data).decode()
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1, 1], "data": [encoded]}]}
    response = http.post(f"/v2/models/{V1_SMALL}/infer", json=body)
    # V2 maps every client error to 400 (or keeps 413), with a protocol-shaped {"error": "..."} body.
    allowed = {400, 413, *(s for s in EXPECTED[name]["statuses"] if s == 200)}
    assert response.status_code in allowed, (name, response.status_code, response.text[:300])


def test_still_serving_after_the_corpus(http: httpx.Client) -> None:
    response = http.post("/classify", content=image_bytes("parrot.jpg"), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    assert http.get("/readyz").status_code == 200
