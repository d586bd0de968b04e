"""ASGI middleware: per-request metrics and access log, API-key check, body-size limit.

Written against raw ASGI rather than BaseHTTPMiddleware, which costs a task and a stream per request.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .error_handlers import ErrorFormats, request_id_of
from .errors import ServiceError
from .metrics import Metrics

access_log = logging.getLogger("mobilenet_serve.access")

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
# The web page, the API docs and the document they read: public, so a person can open them and then enter
# the key in them; they hold no data of the service's. Everything under PUBLIC_PREFIX is the page's files.
PAGE_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PREFIX = "/ui/"
REQUEST_ID_HEADER = "x-request-id"
# An incoming X-Request-ID is kept when it is this short and of these characters; otherwise one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Probes, scrapes and the API docs: kept out of the request metrics, and of the access log unless asked for.
OPERATIONAL_PATHS = UNAUTHENTICATED_PATHS | PAGE_PATHS
# A decoded path may hold any character: escape the control ones so that a client cannot forge a log line.
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


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
        request_id = _request_id(scope)
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
                _access_line(scope, model, status, elapsed, request_id)

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


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID where it is a plain token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            offered = value.decode("latin-1").strip()
            if _REQUEST_ID.fullmatch(offered):
                return offered
    return uuid.uuid4().hex


def _access_line(scope: Scope, model: str, status: int, elapsed: float, request_id: str) -> None:
    path = scope["path"].translate(_ESCAPED)
    fields = {"method": scope["method"], "path": path, "model": model or None, "status": status,
              "latency_ms": round(elapsed * 1000.0, 2), "request_id": request_id}  # fmt: skip
    access_log.info(
        "%s %s model=%s status=%d latency_ms=%.2f request_id=%s",
        scope["method"], path, model or "-", status, elapsed * 1000.0, request_id, extra=fields,
    )  # fmt: skip


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
        if key is None or _offers(scope, key):
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


def _offers(scope: Scope, key: bytes) -> bool:
    """Whether the request carries `key` as X-API-Key or as a bearer token."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            offered = value.strip()
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            offered = value[7:].strip()
        else:
            continue
        if hmac.compare_digest(offered, key):
            return True
    return False


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
