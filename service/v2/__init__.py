"""The Open Inference Protocol (KServe V2) over HTTP: documents, wire codec, metadata, inference, routes."""

from ..error_handlers import ProtocolErrors
from .routes import PREFIX, error_body, router

ERRORS = ProtocolErrors(body=error_body, validation_status=400)

__all__ = ["ERRORS", "PREFIX", "router"]
