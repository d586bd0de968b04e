"""Triton's model repository extension: the index, and load and unload where model control allows them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from ..errors import ServiceError
from ..repository import Repository
from ..responses import JsonResponse
from .schemas import ErrorResponse

router = APIRouter(prefix="/repository")
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401)}
ModelName = Annotated[str, Path(description="the store entry's name")]


class IndexEntry(BaseModel):
    name: str
    version: str = "1"
    state: str
    reason: str


def _label(request: Request, name: str) -> None:
    # Only names from the store become label values: a client must not mint new metric series.
    if name in request.app.state.core.registry.states:
        request.state.model = name


def _repository(request: Request) -> Repository:
    return request.app.state.repository  # type: ignore[no-any-return]


@router.post(
    "/index",
    response_model=list[IndexEntry],
    summary="Every model of the store and its state",
    description='Body (optional): `{"ready": true}` lists only the models ready to serve.',
    responses=ERRORS,
)
async def index(request: Request) -> Response:
    raw = await request.body()
    try:
        document = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ServiceError(400, f"the index request body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("ready", False), bool):
        raise ServiceError(400, 'the index request body must be an object like {"ready": true}')
    entries = await _repository(request).index(ready_only=document.get("ready", False))
    return JsonResponse([{"name": e.name, "version": "1", "state": e.state, "reason": e.reason} for e in entries])


@router.post(
    "/models/{name}/load",
    summary="Load a model from the store, or its files again (model_control_mode explicit)",
    responses=ERRORS,
)
async def load(request: Request, name: ModelName) -> Response:
    _label(request, name)
    await _repository(request).load(name)
    return JsonResponse({})


@router.post("/models/{name}/unload", summary="Unload a model (model_control_mode explicit)", responses=ERRORS)
async def unload(request: Request, name: ModelName) -> Response:
    _label(request, name)
    await _repository(request).unload(name)
    return JsonResponse({})
