"""One error type with the HTTP status and message a client gets; error_handlers.py turns it into a body.

It imports nothing of the web framework, so that the decoder processes can raise it too.
"""

from __future__ import annotations

from typing import Any

CODES_BY_STATUS = {
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
    408: "request_timeout",
    431: "headers_too_large",
}
# One wording wherever a request meets the shutdown: in the queue, in a decoder, or before it was read.
SHUTTING_DOWN = "the server is shutting down; retry on another replica"


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
        self.code = code or CODES_BY_STATUS.get(status, "error")
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
