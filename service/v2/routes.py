"""The Open Inference Protocol (KServe V2, as Triton speaks it) over HTTP: thin routes over the core."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from .. import __version__
from ..core import Core
from ..errors import ServiceError
from ..oip import models
from ..oip.inference import OFFLOAD_BYTES, OFFLOAD_VALUES
from ..oip.inference import infer as run_inference
from ..oip.metadata import MODEL_VERSION, model_config, model_metadata
from ..oip.models import EXTENSIONS, SERVER_NAME
from ..oip.schemas import ModelMetadata, ServerMetadata
from ..registry import LoadedModel
from ..responses import JsonResponse
from ..store import Variant
from . import codec, repository_routes
from .schemas import ErrorResponse

PREFIX = "/v2"

router = APIRouter(prefix=PREFIX, tags=["Open Inference Protocol (V2)"])
router.include_router(repository_routes.router)

ModelName = Annotated[str, Path(description="variant name, as in /v1/models")]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 429, 503, 504)
}


def error_body(error: ServiceError) -> dict[str, Any]:
    """The protocol's error body, `{"error": "<message>"}`."""
    return {"error": error.message}


def _core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


@router.get("", response_model=ServerMetadata, summary="Server metadata", responses=ERRORS)
async def server_metadata() -> Response:
    metadata = ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)
    return JsonResponse(metadata.model_dump())


@router.get("/health/live", summary="Liveness: 200 while the process serves HTTP", response_class=Response)
async def server_live() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready", summary="Readiness: 200 once the models are loaded and warm, else 400", response_class=Response
)
async def server_ready(request: Request) -> Response:
    return Response(status_code=200 if _core(request).registry.ready else 400)


@router.get("/models/{name}", response_model=ModelMetadata, summary="Model metadata", responses=ERRORS)
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, include_in_schema=False)
async def get_model_metadata(request: Request, name: ModelName) -> Response:
    return JsonResponse(model_metadata(_known_variant(request, name)).model_dump())


@router.get(
    "/models/{name}/ready",
    summary="Model readiness: 200 when it can serve, else 400",
    responses=ERRORS,
    response_class=Response,
)
@router.get("/models/{name}/versions/{version}/ready", include_in_schema=False)
async def model_ready(request: Request, name: ModelName) -> Response:
    _known_variant(request, name)
    ready = models.is_ready(_core(request), name)
    return Response(status_code=200 if ready else 400)


@router.get("/models/{name}/config", summary="Triton model configuration", responses=ERRORS)
@router.get("/models/{name}/versions/{version}/config", include_in_schema=False)
async def get_model_config(request: Request, name: ModelName) -> Response:
    return JsonResponse(model_config(_core(request).settings, _known_variant(request, name)))


@router.post(
    "/models/{name}/infer",
    summary="Inference, with JSON tensors or the binary tensor data extension",
    description=(
        "Send exactly one input: `image` (FP32 [N, 3, H, W], preprocessed) or `image_bytes` (BYTES [N, 1], encoded "
        "images; base64 strings in JSON). Outputs default to `logits` (`seg_logits` for segmentation models)."
    ),
    responses=ERRORS,
)
@router.post("/models/{name}/versions/{version}/infer", include_in_schema=False)
async def infer(request: Request, name: ModelName) -> Response:
    started = time.perf_counter()
    core = _core(request)
    model = _loaded(request, name)
    body = codec.decompress(await request.body(), request.headers.get("content-encoding"), core.settings.max_body_bytes)
    header_length = request.headers.get(codec.HEADER_LENGTH)
    offload = len(body) > OFFLOAD_BYTES
    if offload:
        parsed, inputs = await core.in_pool(codec.parse_request, body, header_length)
    else:
        parsed, inputs = codec.parse_request(body, header_length)
    outputs = await run_inference(core, model, parsed, inputs, started, offload)
    arguments = (model.variant.name, MODEL_VERSION, parsed.id, outputs)
    if sum(o.value.size for o in outputs if isinstance(o.value, np.ndarray) and not o.binary) > OFFLOAD_VALUES:
        payload, json_length = await core.in_pool(codec.encode_response, *arguments)
    else:
        payload, json_length = codec.encode_response(*arguments)
    headers = {} if json_length is None else {codec.HEADER_LENGTH: str(json_length)}
    encoding = codec.accepted_encoding(request.headers.get("accept-encoding"))
    if encoding is not None:
        payload = await core.in_pool(codec.compress, payload, encoding)
        headers["Content-Encoding"] = encoding
    media = "application/json" if json_length is None else "application/octet-stream"
    return Response(payload, media_type=media, headers=headers)


def _known_variant(request: Request, name: str) -> Variant:
    """The variant of a model this server serves or is loading; 404 for any other name or version."""
    variant = models.known_variant(_core(request), name)
    request.state.model = name
    # Only the /versions/{version}/ routes have this path parameter.
    models.check_version(name, request.path_params.get("version"))
    return variant


def _loaded(request: Request, name: str) -> LoadedModel:
    _known_variant(request, name)
    return _core(request).resolve(name, None)
