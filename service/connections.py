"""uvicorn's httptools protocol with the limits it lacks: header size, read deadlines, idle and connection caps.

Without them a client could hold a connection open forever without sending a byte, or one byte a
second (slowloris), send a header line of any size, or open connections until the server runs out of
file descriptors. Here a request's headers must arrive within `header_timeout_seconds` of its first
byte and its body within `body_timeout_seconds` of its headers; a connection that has not started a
request closes after the keep-alive timeout, as it does between requests; and past `max_connections`
a new connection is answered 503 and closed at once, so that its descriptor is free again.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .raw_refusal import SHUTTING_DOWN_REFUSAL, refusal

log = logging.getLogger("mobilenet_serve.connections")
# Built once: a flood of connections gets thousands of them.
_TOO_MANY_CONNECTIONS = refusal(503, "too many connections; retry shortly", retry_after=1)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float


# Descriptors kept for what is not a client connection: model files, decoders, pipes, the listening socket.
RESERVED_DESCRIPTORS = 256


def descriptors_for(max_connections: int) -> None:
    """Raise the process's soft limit on open files as far as needed (up to the hard limit), or warn."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_DESCRIPTORS
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        log.warning("max_connections %d needs %d open files; this process may open %d", max_connections, needed, soft)


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn as `http`, enforcing `limits`."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ConnectionLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        if len(self.connections) > self.limits.max_connections:
            self._refuse(_TOO_MANY_CONNECTIONS)
            return
        # Closed after the keep-alive timeout when no request starts, as between two requests.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """At shutdown, a connection that has not begun a request is told why it closes instead of dropped."""
        if self.cycle is None:
            self._refuse(SHUTTING_DOWN_REFUSAL)
            return
        super().shutdown()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm(self.limits.header_timeout_seconds, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_seconds, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._refuse(refusal(431, f"the request's headers exceed {self.limits.max_header_bytes} bytes"))

    def _arm(self, seconds: float, on_timeout: Any) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, on_timeout)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._refuse(refusal(408, f"the request's headers took longer than {self.limits.header_timeout_seconds:g} s"))

    def _body_too_slow(self) -> None:
        # The app may be reading the body: closing tells it the client is gone (logged as 499).
        log.warning("closing a connection whose request body took longer than %g s", self.limits.body_timeout_seconds)
        self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        self.transport.close()
