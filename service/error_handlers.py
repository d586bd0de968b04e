"""The app-level handlers that turn every failure into the JSON error body of the protocol it was sent to.

Each protocol has its own error body: REST's `{"error": {"code", "message", ...}}` everywhere, unless a
protocol mounted under a path prefix registered another (V2's `{"error": "<message>"}`). Handlers and
middleware ask `ErrorFormats` for the body of the path at hand, so none of them imports a protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .errors import CODES_BY_STATUS, ServiceError
from .responses import JsonResponse

log = logging.getLogger("mobilenet_serve.errors")

CLIENT_CLOSED_REQUEST = 499


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
    request_id: str | None = None, **details: Any,
) -> Response:  # fmt: skip
    """REST's error body, with the request's id where it has one (ObservabilityMiddleware gives every one)."""
    error = {"code": code or CODES_BY_STATUS.get(status, "error"), "message": message, **details}
    if request_id is not None:
        error["request_id"] = request_id
    return JsonResponse({"error": error}, status_code=status, headers=headers)


def request_id_of(scope: Any) -> str | None:
    """The id ObservabilityMiddleware gave the request, None outside it."""
    return scope.get("state", {}).get("request_id")  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ProtocolErrors:
    body: Callable[[ServiceError], dict[str, Any]]
    validation_status: int  # for parameters that fail their declared types and bounds


class ErrorFormats:
    def __init__(self) -> None:
        self._by_prefix: dict[str, ProtocolErrors] = {}

    def register(self, prefix: str, errors: ProtocolErrors) -> None:
        self._by_prefix[prefix] = errors

    def response(self, path: str, error: ServiceError, request_id: str | None = None) -> Response:
        protocol = self._protocol(path)
        if protocol is None:
            return error_response(error.status, error.message, error.code, error.headers, request_id, **error.details)
        return JsonResponse(protocol.body(error), status_code=error.status, headers=error.headers)

    def validation_status(self, path: str) -> int:
        protocol = self._protocol(path)
        return 422 if protocol is None else protocol.validation_status

    def _protocol(self, path: str) -> ProtocolErrors | None:
        for prefix, errors in self._by_prefix.items():
            if path == prefix or path.startswith(prefix + "/"):
                return errors
        return None


def install_error_handlers(app: FastAPI, formats: ErrorFormats) -> None:
    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return formats.response(request.url.path, exc, request_id_of(request.scope))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body"))
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        status = formats.validation_status(request.url.path)
        error = ServiceError(status, "; ".join(problems) or "invalid request", code="invalid_parameter")
        return formats.response(request.url.path, error, request_id_of(request.scope))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        # The router's own 404 and 405 carry only the status phrase: say what was not found or allowed.
        if exc.status_code == 404 and message == "Not Found":
            message = f"{path} is not an endpoint of this server"
        elif exc.status_code == 405 and message == "Method Not Allowed":
            message = f"{request.method} is not allowed on {path}"
        headers = dict(exc.headers) if exc.headers else None
        error = ServiceError(exc.status_code, message, headers=headers)
        return formats.response(path, error, request_id_of(request.scope))

    async def client_disconnected(_: Request, __: Exception) -> Response:
        # Nobody is left to read it: the status is for the access log and metrics, where a client that hung up
        # mid-body must not count as a server error (nginx's 499, "client closed request").
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        error = ServiceError(500, "internal error", code="internal_error")
        return formats.response(request.url.path, error, request_id_of(request.scope))

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_disconnected)
    app.add_exception_handler(Exception, unexpected_error)
