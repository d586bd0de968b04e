"""A refusal written straight to a socket, before any request was parsed: the same JSON error body the app
sends (`{"error": {"code", "message"}}`), then the connection closes. The connection guard (connections.py)
and the drain at shutdown (draining_server.py) use it, so a client sees one format whoever refused it."""

from __future__ import annotations

import json
from http import HTTPStatus

from .errors import CODES_BY_STATUS, SHUTTING_DOWN


def refusal(status: int, message: str, code: str | None = None, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": {"code": code or CODES_BY_STATUS.get(status, "error"), "message": message}}).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        *([f"retry-after: {retry_after}"] if retry_after is not None else []),
        "connection: close",
        f"content-length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


# What a connection gets that the shutdown reaches before its request: from the accept backlog or idle.
SHUTTING_DOWN_REFUSAL = refusal(503, SHUTTING_DOWN, code="shutting_down", retry_after=1)
