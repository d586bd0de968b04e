"""X-Request-ID on every response, in the access log and in REST error bodies; JSON log lines on request."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess, running_server
from support import V1_SMALL, image_bytes

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/v1/models", "/v2/health/ready"])
def test_every_response_carries_one_made_here(client: httpx.Client, path: str) -> None:
    assert GENERATED.fullmatch(client.get(path).headers["x-request-id"])


def test_a_clients_id_is_kept_and_logged(client: httpx.Client, server: ServerProcess) -> None:
    response = client.post(
        "/classify",
        content=image_bytes("owl.jpg"),
        headers={"content-type": "image/jpeg", "X-Request-ID": "trace-42.a"},
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "trace-42.a"
    log = server.log_once("request_id=trace-42.a")
    assert "POST /classify" in log and "request_id=trace-42.a" in log


@pytest.mark.parametrize("offered", ["has spaces", "x" * 129, "new\\nline", ""])
def test_an_id_that_is_not_a_plain_token_is_replaced(client: httpx.Client, offered: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/classify?model=nope", 404), ("POST", "/classify?top_k=0", 422), ("GET", "/nowhere", 404)],
)
def test_rest_error_bodies_name_the_request(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(
        method, path, content=image_bytes("owl.jpg"), headers={"content-type": "image/jpeg", "X-Request-ID": "err-1"}
    )
    assert response.status_code == status and response.json()["error"]["request_id"] == "err-1"
    assert response.headers["x-request-id"] == "err-1"


def test_errors_from_middleware_and_v2_carry_it_too(tmp_path: Path) -> None:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "api_key": "k", "log_format": "json"}
    with running_server(tmp_path, config) as process, process.client() as http:
        refused = http.post("/classify", content=b"x", headers={"X-Request-ID": "no-key"})
        v2 = http.get("/v2/models/nope", headers={"X-API-Key": "k", "X-Request-ID": "v2-1"})
        headers = {"content-type": "image/jpeg", "X-API-Key": "k", "X-Request-ID": "ok-1"}
        answered = http.post("/classify?top_k=1", content=image_bytes("owl.jpg"), headers=headers)
        log = process.log_once("ok-1")
    assert refused.status_code == 401 and refused.json()["error"]["request_id"] == "no-key"
    assert v2.status_code == 404 and set(v2.json()) == {"error"} and v2.headers["x-request-id"] == "v2-1"
    assert answered.status_code == 200
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = next(line for line in lines if line.get("request_id") == "ok-1")
    assert access["logger"] == "mobilenet_serve.access" and access["level"] == "INFO"
    assert {k: access[k] for k in ("method", "path", "model", "status")} == {
        "method": "POST", "path": "/classify", "model": V1_SMALL, "status": 200,
    }  # fmt: skip
    assert access["latency_ms"] > 0 and "time" in access
    assert any(line["logger"] == "mobilenet_serve.registry" for line in lines)  # every log line, not only access
