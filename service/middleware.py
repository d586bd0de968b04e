"""ASGI middleware: per-request metrics and access log, API-key check, body-size limit.

Written against raw ASGI rather than BaseHTTPMiddleware, which costs a task and a stream per request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import access_line, offers_key, request_id
from .error_handlers import ErrorFormats, request_id_of
from .errors import ServiceError
from .metrics import Metrics

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
# The web page, the API docs and the document they read: public, so a person can open them and then enter
# the key in them; they hold no data of the service's. Everything under PUBLIC_PREFIX is the page's files.
PAGE_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIX = "/ui/"
# Probes, scrapes and the API docs: kept out of the request metrics, and of the access log unless asked for.
OPERATIONAL_PATHS = UNAUTHENTICATED_PATHS | PAGE_PATHS


class ObservabilityMiddleware:
    """Counts and times every request and writes one access-log line for it; operational ones only the line,
    and that only with `log_operational`."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute], log_operational: bool = False
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.log_operational = log_operational

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        operational = _public(scope["path"])
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - started
            model = scope["state"].get("model", "")
            if not operational:
                endpoint = self._endpoint(scope)
                self.metrics.requests.labels(endpoint, model, str(status)).inc()
                self.metrics.request_duration.labels(endpoint, model).observe(elapsed)
            if not operational or self.log_operational:
                access_line(scope["method"], scope["path"], model, status, elapsed, request_id)

    def _endpoint(self, scope: Scope) -> str:
        route: Any = scope.get("route")
        path = getattr(route, "path", None)
        if path:
            return str(path)
        # Refused before routing (API key, body size): label it with the route it was sent to. Label values
        # come only from the app's own routes: a client must not mint new series.
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                return str(getattr(candidate, "path", "unmatched"))
        return "unmatched"


def _request_id_of(scope: Scope) -> str:
    return request_id(value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id")


class ApiKeyMiddleware:
    """Every path but health, readiness and metrics needs the API key, when one is configured.

    The model-control routes (`admin_prefix`) need the admin key instead when one is configured: a client
    that may run inference should not thereby be able to unload the models others use.
    """

    def __init__(
        self, app: ASGIApp, api_key: str | None, formats: ErrorFormats, admin_key: str | None = None,
        admin_prefix: str = "/v2/repository",
    ) -> None:  # fmt: skip
        self.app = app
        self.api_key = None if api_key is None else api_key.encode()
        self.admin_key = None if admin_key is None else admin_key.encode()
        self.admin_prefix = admin_prefix
        self.formats = formats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        admin = self.admin_key is not None and scope["path"].startswith(self.admin_prefix)
        key = self.admin_key if admin else self.api_key
        if key is None or offers_key(scope["headers"], key):
            await self.app(scope, receive, send)
            return
        error = ServiceError(
            401,
            f"missing or wrong {'admin ' if admin else ''}API key; send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await self.formats.response(scope["path"], error, request_id_of(scope))(scope, receive, send)


def _public(path: str) -> bool:
    """Probes, scrapes, the page and the docs: open without the key, and kept out of the request metrics."""
    return path in OPERATIONAL_PATHS or path.startswith(PUBLIC_PREFIX)


class BodyLimitMiddleware:
    """413 for a body over `max_body_bytes`; 503 while the bodies of the requests in progress add up past
    `max_buffered_bytes`, so that many large uploads at once cannot buffer the memory away."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_buffered_bytes: int, formats: ErrorFormats) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.formats = formats
        self._buffered = 0  # bytes of the bodies in progress: declared, or received so far when streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(
                scope, receive, send, ServiceError(413, self._message(), headers={"Connection": "close"})
            )
            return
        held = declared or 0
        if self._buffered + held > self.max_buffered_bytes:
            await self._refuse(scope, receive, send, self._busy())
            return
        self._buffered += held
        received = 0

        async def counting_receive() -> Message:
            nonlocal received, held
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise ServiceError(413, self._message())
                if received > held:  # streamed, or more than declared: account for it as it arrives
                    if self._buffered + received - held > self.max_buffered_bytes:
                        raise self._busy()
                    self._buffered += received - held
                    held = received
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            self._buffered -= held

    def _message(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes"

    def _busy(self) -> ServiceError:
        return ServiceError(
            503,
            f"the server is receiving {self.max_buffered_bytes} bytes of request bodies already; retry shortly",
            code="too_much_buffered",
            headers={"Retry-After": "1", "Connection": "close"},
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
        await self.formats.response(scope["path"], error, request_id_of(scope))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
