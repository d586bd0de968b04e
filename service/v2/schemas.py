"""The V2 HTTP error document (the others are the protocol's own, in service/oip/schemas.py)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorResponse(BaseModel):
    error: str
