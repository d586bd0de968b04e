"""What every transport does the same way around a call: its request id, the API-key check, the access line.

The HTTP middleware and the gRPC servicer both use these, so a client sees one rule and operators read
one log format whichever protocol carried the request.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from collections.abc import Iterable

access_log = logging.getLogger("mobilenet_serve.access")

# An incoming request id is kept when it is this short and of these characters; otherwise one is made.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# A decoded path may hold any character: escape the control ones so that a client cannot forge a log line.
_ESCAPED = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def request_id(offered: Iterable[str]) -> str:
    """The first of the client's request ids that is a plain token, else a new one."""
    return next((value.strip() for value in offered if _REQUEST_ID.fullmatch(value.strip())), None) or uuid.uuid4().hex


def offers_key(headers: Iterable[tuple[bytes, bytes]], key: bytes) -> bool:
    """Whether (name, value) pairs, names lower-case, carry `key` as X-API-Key or as a bearer token."""
    for name, value in headers:
        if name == b"x-api-key":
            offered = value.strip()
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            offered = value[7:].strip()
        else:
            continue
        if hmac.compare_digest(offered, key):
            return True
    return False


def access_line(method: str, path: str, model: str, status: int, elapsed: float, request_id: str) -> None:
    path = path.translate(_ESCAPED)
    fields = {"method": method, "path": path, "model": model or None, "status": status,
              "latency_ms": round(elapsed * 1000.0, 2), "request_id": request_id}  # fmt: skip
    access_log.info(
        "%s %s model=%s status=%d latency_ms=%.2f request_id=%s",
        method, path, model or "-", status, elapsed * 1000.0, request_id, extra=fields,
    )  # fmt: skip
