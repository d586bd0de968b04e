"""The optional API key: every endpoint but health, readiness and metrics needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support import IMAGES, V1_SMALL, metric_value, wait_until_app_ready

from service.app import create_app
from service.config import Settings

KEY = "correct horse battery staple"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(models=[V1_SMALL], default_model=V1_SMALL, api_key=KEY, intra_op_threads=1)
    with TestClient(create_app(settings)) as http:
        wait_until_app_ready(http)
        yield http


def classify(client: TestClient, headers: dict[str, str]) -> int:
    data = (IMAGES / "parrot.jpg").read_bytes()
    return client.post("/classify", content=data, headers={"Content-Type": "image/jpeg", **headers}).status_code


def test_open_paths(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"X-API-Key": KEY[:-1]}],
)
def test_refused_without_the_key(client: TestClient, headers: dict[str, str]) -> None:
    assert classify(client, headers) == 401
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}]
)
def test_accepted_with_the_key(client: TestClient, headers: dict[str, str]) -> None:
    assert classify(client, headers) == 200
    assert client.get("/v1/models", headers=headers).status_code == 200


def test_refusals_are_counted_under_the_route_they_were_sent_to(client: TestClient) -> None:
    classify(client, {})
    client.get(f"/v2/models/{V1_SMALL}/config")
    text = client.get("/metrics").text
    assert metric_value(text, "mobilenet_requests_total", endpoint="/classify", code="401") >= 1
    assert metric_value(text, "mobilenet_requests_total", endpoint="/v2/models/{name}/config", code="401") >= 1
    assert metric_value(text, "mobilenet_requests_total", endpoint="unmatched", code="401") == 0


@pytest.mark.parametrize(
    "path", ["/", "/docs", "/redoc", "/openapi.json", "/ui/js/main.js", "/ui/vendor/redoc.standalone.js"]
)
def test_the_page_and_the_docs_open_without_the_key(client: TestClient, path: str) -> None:
    # They hold no data: a person opens them, then enters the key in them.
    assert client.get(path).status_code == 200


def test_the_page_s_files_do_not_let_a_path_past_the_key(client: TestClient) -> None:
    for path in ("/ui/../v1/models", "/ui/%2e%2e/v1/models", "/uiv1/models", "/ui"):
        response = client.get(path)
        assert response.status_code in (401, 404), path
        assert "default_model" not in response.text, path


def test_the_api_document_declares_the_key_where_it_is_needed(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    paths = document["paths"]
    assert paths["/classify"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert paths["/v2/repository/index"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    for public in ("/healthz", "/readyz", "/metrics"):
        assert paths[public]["get"]["security"] == []
