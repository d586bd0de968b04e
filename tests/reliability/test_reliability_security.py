"""Hostile strings and credentials: model names cannot reach the filesystem, and the API key guards every route.

The protected routes are read off the app's own route table, so a route added later is covered without editing
this file.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from support import IMAGES, V1_SMALL, wait_until_app_ready

from service import access, middleware, rest, rest_status, v2
from service.app import create_app
from service.config import Settings
from service.middleware import PAGE_PATHS, PUBLIC_PREFIX, UNAUTHENTICATED_PATHS

KEY = "reliability-key-7f3a"
OPEN_HEADERS = {"X-API-Key": KEY}

HOSTILE_NAMES = [
    "../sources",
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2fsources",
    "/etc/passwd",
    "sources",
    "build",
    "mobilenet_v1_0.25_128/../sources",
    "mobilenet_v1_0.25_128\x00",
    "mobilenet_v1_0.25_128%00",
    "..\\..\\windows",
    "~root",
    "x" * 5000,
    "ö" * 300,
]


@pytest.fixture(scope="module")
def app_and_client() -> Iterator[tuple[object, TestClient]]:
    settings = Settings(models=[V1_SMALL], default_model=V1_SMALL, api_key=KEY, intra_op_threads=1)
    app = create_app(settings)
    with TestClient(app) as http:
        wait_until_app_ready(http)
        yield app, http


@pytest.fixture(scope="module")
def client(app_and_client: tuple[object, TestClient]) -> TestClient:
    return app_and_client[1]


def _assert_not_found_json(response_status: int, body: object) -> None:
    assert response_status in (400, 404, 422), response_status
    assert isinstance(body, dict)
    text = str(body)
    # Nothing from outside the store may leak into the answer.
    assert "root:" not in text and "Traceback" not in text


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_rest_model_param_cannot_escape_the_store(client: TestClient, name: str) -> None:
    data = (IMAGES / "parrot.jpg").read_bytes()
    for endpoint in ("/classify", "/embed", "/backbone"):
        response = client.post(
            endpoint, params={"model": name}, content=data, headers={"Content-Type": "image/jpeg", **OPEN_HEADERS}
        )
        _assert_not_found_json(response.status_code, response.json())


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_path_model_names_cannot_escape_the_store(client: TestClient, name: str) -> None:
    encoded = quote(name, safe="")
    for path in (
        f"/v1/models/{encoded}",
        f"/v2/models/{encoded}",
        f"/v2/models/{encoded}/ready",
        f"/v2/models/{encoded}/config",
    ):
        response = client.get(path, headers=OPEN_HEADERS)
        assert response.status_code in (400, 404, 422), (path, response.status_code)
        assert "root:" not in response.text
    infer = client.post(f"/v2/models/{encoded}/infer", json={"inputs": []}, headers=OPEN_HEADERS)
    assert infer.status_code in (400, 404, 422)


def test_raw_traversal_paths_are_not_served(client: TestClient) -> None:
    for path in ("/v1/models/../../etc/passwd", "/v2/models/..%2f..%2fsources/config", "/static/../../pyproject.toml"):
        response = client.get(path, headers=OPEN_HEADERS)
        assert response.status_code in (400, 404, 405, 422), (path, response.status_code)
        assert "[project]" not in response.text and "root:" not in response.text


def _all_routes(app: object) -> list[object]:
    """Every route the app serves, including those inside included routers (newer FastAPI nests them)."""
    found: list[object] = []
    pending = list(app.routes)  # type: ignore[attr-defined]
    while pending:
        route = pending.pop(0)
        nested = getattr(route, "routes", None) or getattr(getattr(route, "router", None), "routes", None)
        if nested is not None and not hasattr(route, "endpoint"):
            pending.extend(nested)
        else:
            found.append(route)
    return found


def _protected_routes(app: object) -> list[tuple[str, str]]:
    routes: list[tuple[str, str]] = []
    for route in [*_all_routes(app), *rest.router.routes, *rest_status.router.routes, *v2.router.routes]:
        path = getattr(route, "path", None)
        if not path or path in UNAUTHENTICATED_PATHS or path in PAGE_PATHS:
            continue
        path = path.replace("{name}", V1_SMALL).replace("{version}", "1").replace("{path:path}", "x")
        for method in sorted(getattr(route, "methods", None) or ()):
            routes.append((method, path))
    return sorted(set(routes))


def test_route_table_is_nonempty(app_and_client: tuple[object, TestClient]) -> None:
    routes = _protected_routes(app_and_client[0])
    paths = {p for _, p in routes}
    for expected in (
        "/classify",
        "/embed",
        "/backbone",
        "/detect",
        "/segment",
        "/v1/models",
        "/v2",
    ):
        assert expected in paths


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"Authorization": f"Basic {KEY}"}],
)
def test_every_protected_route_refuses_a_bad_key(
    app_and_client: tuple[object, TestClient], headers: dict[str, str]
) -> None:
    app, client = app_and_client
    for method, path in _protected_routes(app):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers.get("www-authenticate") == "Bearer"


def test_every_protected_route_accepts_the_right_key(app_and_client: tuple[object, TestClient]) -> None:
    app, client = app_and_client
    for method, path in _protected_routes(app):
        response = client.request(method, path, headers=OPEN_HEADERS)
        assert response.status_code != 401, (method, path)
        assert response.status_code < 500, (method, path, response.status_code, response.text)


def test_open_routes_need_no_key(client: TestClient) -> None:
    # Probes and scrapes; and the page and the docs, which hold no data and take the key in the browser.
    for path in sorted(UNAUTHENTICATED_PATHS | PAGE_PATHS):
        assert client.get(path).status_code == 200, path
    assert client.get(f"{PUBLIC_PREFIX}js/main.js").status_code == 200


def test_key_comparison_is_constant_time() -> None:
    source = inspect.getsource(middleware.ApiKeyMiddleware) + inspect.getsource(access.offers_key)
    assert "compare_digest(" in source
    assert "== key" not in source and "key ==" not in source and "== self." not in source
