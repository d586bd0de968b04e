"""An APIRoute with a shorter request path, for endpoints that take only the request and scalar parameters.

FastAPI's own handler solves the endpoint's dependency graph on every request, re-deriving each
parameter's type as it goes. The endpoints here take nothing but the `Request` and path or query
parameters, so this route validates those parameters with the fields FastAPI built for them and
awaits the endpoint itself: on the 2-core VM a lone /classify request spends 0.09-0.12 ms instead of
0.15-0.23 ms between the first middleware and the endpoint (docs/benchmarks.md).
The declaration, the OpenAPI schema and the validation errors stay FastAPI's; any other endpoint
shape gets FastAPI's handler.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        dependant = self.dependant
        endpoint = dependant.call
        if endpoint is None or not _takes_only_parameters(dependant, endpoint):
            return super().get_route_handler()
        request_name = dependant.request_param_name
        # Each field with its error location, built once: the per-request loop only reads and validates.
        path = [(field, ("path", field.alias)) for field in dependant.path_params]
        query = [(field, ("query", field.alias)) for field in dependant.query_params]

        async def handler(request: Request) -> Response:
            values: dict[str, Any] = {}
            errors: list[Any] = []
            for received, fields in ((request.path_params, path), (request.query_params, query)):
                for field, loc in fields:
                    raw = received.get(field.alias)
                    if raw is None:
                        if field.field_info.is_required():
                            errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
                        else:
                            values[field.name] = field.default
                        continue
                    value, problems = field.validate(raw, values, loc=loc)
                    errors.extend(problems)
                    values[field.name] = value
            if errors:
                raise RequestValidationError(errors)
            if request_name is not None:
                values[request_name] = request
            response: Response = await endpoint(**values)
            return response

        return handler


def _takes_only_parameters(dependant: Dependant, endpoint: Callable[..., Any]) -> bool:
    """An async endpoint of the request, path and query parameters only, declared to return a Response."""
    # Dependency overrides need no check: an endpoint without dependencies has nothing to override.
    return (
        inspect.iscoroutinefunction(endpoint)
        and _returns_response(endpoint)
        and not (dependant.header_params or dependant.cookie_params or dependant.body_params)
        and not dependant.dependencies
        and not (
            dependant.websocket_param_name
            or dependant.http_connection_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
        )
    )


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    """Whether the endpoint is declared to return a Response, which FastAPI would pass through unchanged."""
    try:
        returned = typing.get_type_hints(endpoint).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returned, type) and issubclass(returned, Response)
