"""One error type with an HTTP status, and handlers that turn every failure into a JSON body."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .responses import JsonResponse

log = logging.getLogger("mobilenet_serve.errors")

CLIENT_CLOSED_REQUEST = 499

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "queue_full",
    500: "internal_error",
    503: "unavailable",
    504: "deadline_exceeded",
}


class ServiceError(Exception):
    """A request that cannot be served, with the status and message the client gets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES_BY_STATUS.get(status, "error")
        self.headers = headers
        self.details = details

    def with_index(self, index: int) -> ServiceError:
        """The same error, attributed to the index-th image of a multi-image request."""
        return ServiceError(
            self.status,
            f"image {index}: {self.message}",
            code=self.code,
            headers=self.headers,
            index=index,
            **self.details,
        )


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, **details: Any
) -> Response:
    body = {"error": {"code": code or _CODES_BY_STATUS.get(status, "error"), "message": message, **details}}
    return JsonResponse(body, status_code=status, headers=headers)


async def _service_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.message, exc.code, exc.headers, **exc.details)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body"))
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return error_response(422, "; ".join(problems) or "invalid request", "invalid_parameter")


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, message, headers=dict(exc.headers) if exc.headers else None)


async def _client_disconnected(_: Request, __: Exception) -> Response:
    # Nobody is left to read it: the status is for the access log and metrics, where a client that hung up
    # mid-body must not count as a server error (nginx's 499, "client closed request").
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
