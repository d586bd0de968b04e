"""LeanRoute answers exactly as FastAPI's own route does, over real HTTP, and steps aside for other shapes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.routing import APIRoute
from helpers_service import free_port
from starlette.responses import Response

from service.errors import install_error_handlers
from service.responses import JsonResponse
from service.routing import LeanRoute


async def _echo(
    request: Request,
    item: Annotated[int, Path(ge=1)],
    name: Annotated[str | None, Query()] = None,
    top_k: Annotated[int, Query(ge=1, le=1000)] = 5,
    scale: Annotated[float, Query(ge=0.0, lt=1.0)] = 0.5,
    flag: Annotated[bool, Query()] = True,
    aliased: Annotated[int | None, Query(alias="with-alias")] = None,
    needed: Annotated[int, Query()] = 0,
) -> Response:
    return JsonResponse(
        {
            "method": request.method,
            "item": item,
            "name": name,
            "top_k": top_k,
            "scale": scale,
            "flag": flag,
            "aliased": aliased,
            "needed": needed,
        }
    )


async def _required(required: Annotated[int, Query()]) -> Response:
    return JsonResponse({"required": required})


async def _with_header(x_token: Annotated[str | None, Header()] = None) -> Response:
    return JsonResponse({"token": x_token})


def _sync(top_k: Annotated[int, Query(ge=1)] = 5) -> Response:
    return JsonResponse({"top_k": top_k})


async def _dependency() -> int:
    return 7


async def _with_dependency(value: Annotated[int, Depends(_dependency)]) -> Response:
    return JsonResponse({"value": value})


async def _returns_dict(top_k: Annotated[int, Query(ge=1)] = 5) -> dict[str, int]:
    return {"top_k": top_k}


def _router(route_class: type[APIRoute], prefix: str) -> APIRouter:
    router = APIRouter(prefix=prefix, route_class=route_class)
    router.add_api_route("/echo/{item}", _echo, methods=["POST"])
    router.add_api_route("/required", _required, methods=["GET"])
    router.add_api_route("/header", _with_header, methods=["GET"])
    router.add_api_route("/sync", _sync, methods=["GET"])
    router.add_api_route("/dependency", _with_dependency, methods=["GET"])
    router.add_api_route("/dict", _returns_dict, methods=["GET"])
    return router


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(_router(LeanRoute, "/lean"))
    app.include_router(_router(APIRoute, "/plain"))
    install_error_handlers(app)
    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


CASES = [
    ("POST", "/echo/3", ""),
    ("POST", "/echo/3", "name=cat&top_k=12&scale=0.25&flag=false&with-alias=4&needed=9"),
    ("POST", "/echo/3", "flag=yes&flag=0"),  # repeated: the last value counts
    ("POST", "/echo/3", "top_k=1&top_k=1001"),
    ("POST", "/echo/0", ""),
    ("POST", "/echo/three", ""),
    ("POST", "/echo/3", "top_k=0"),
    ("POST", "/echo/3", "top_k=many&scale=1.0&flag=perhaps"),
    ("POST", "/echo/3", "top_k=&name="),
    ("POST", "/echo/3", "top_k=2.0"),
    ("POST", "/echo/3", "with-alias=x&aliased=5"),
    ("POST", "/echo/3", "unknown=1"),
    ("GET", "/required", ""),
    ("GET", "/required", "required=4"),
    ("GET", "/required", "required=four"),
    ("GET", "/sync", "top_k=3"),
    ("GET", "/sync", "top_k=0"),
    ("GET", "/dependency", ""),
    ("GET", "/dict", "top_k=3"),
    ("GET", "/dict", "top_k=0"),
]


@pytest.mark.parametrize(("method", "path", "query"), CASES)
def test_lean_route_answers_as_fastapi_does(base_url: str, method: str, path: str, query: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        lean = client.request(method, f"/lean{path}?{query}", headers={"X-Token": "t"})
        plain = client.request(method, f"/plain{path}?{query}", headers={"X-Token": "t"})
    assert (lean.status_code, lean.json()) == (plain.status_code, plain.json())
    assert lean.status_code in (200, 422)


def test_header_param_is_read_through_fastapi(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        answer = client.get("/lean/header", headers={"X-Token": "secret"})
    assert answer.json() == {"token": "secret"}


def test_only_request_path_and_query_endpoints_take_the_short_path() -> None:
    handlers = {
        route.path: route.get_route_handler().__qualname__
        for route in _router(LeanRoute, "/lean").routes
        if isinstance(route, APIRoute)
    }
    short = "LeanRoute.get_route_handler.<locals>.handler"
    assert handlers["/lean/echo/{item}"] == short
    assert handlers["/lean/required"] == short
    for path in ("/lean/header", "/lean/sync", "/lean/dependency", "/lean/dict"):
        assert handlers[path] != short, path


def test_lean_route_keeps_the_openapi_schema() -> None:
    lean, plain = FastAPI(), FastAPI()
    lean.include_router(_router(LeanRoute, ""))
    plain.include_router(_router(APIRoute, ""))
    assert lean.openapi()["paths"] == plain.openapi()["paths"]
