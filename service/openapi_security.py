"""The OpenAPI document declares how to send the API key, so that /docs offers an Authorize button.

The schemes are always declared; the operations require them only when the server has a key, and the
public paths (health, readiness, metrics) never do, just as ApiKeyMiddleware enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SCHEMES = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The server's API key (the admin key for /v2/repository when one is set).",
    },
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key as an `Authorization: Bearer` token."},
}


def openapi_with_keys(app: FastAPI, key_required: bool, public_paths: Collection[str]) -> Callable[[], dict[str, Any]]:
    """A replacement for `app.openapi` that adds the schemes, built once like FastAPI's own."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = SCHEMES
            requirement: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}] if key_required else []
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation["security"] = [] if path in public_paths else requirement
            app.openapi_schema = schema
        return app.openapi_schema

    return document
