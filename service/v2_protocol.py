"""The Open Inference Protocol (KServe V2, as Triton speaks it) over HTTP, on the same pipeline as REST.

Each model takes exactly one of two inputs per request: `image`, FP32 [N, 3, H, W] already
preprocessed as the variant's manifest says, or `image_bytes`, BYTES [N, 1] of encoded images that the
server decodes and preprocesses exactly as the REST endpoints do. Every image joins the model's
dynamic batcher on its own, so V2 and REST requests share ONNX Runtime runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from . import __version__
from . import v2_codec as codec
from .api import Context
from .errors import ServiceError
from .registry import Served, Status
from .responses import JsonResponse
from .routing import Handler, LeanRoute
from .store import Variant
from .v2_models import (
    IMAGE,
    IMAGE_BYTES,
    MODEL_VERSION,
    PROBABILITIES,
    default_outputs,
    model_config,
    model_metadata,
    output_specs,
)

log = logging.getLogger("mobilenet_serve.v2")


class ProtocolRoute(LeanRoute):
    """Answers failures with the protocol's error body; the app's handlers would use the REST format."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def protocol_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as error:
                return codec.error_response(error.status, error.message, error.headers)
            except RequestValidationError as error:
                return codec.error_response(400, f"invalid request: {error.errors()}")
            except HTTPException as error:
                return codec.error_response(error.status_code, str(error.detail), dict(error.headers or {}))
            except ClientDisconnect:
                raise  # not a failure of the server: the app's handler records it as 499
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return codec.error_response(500, "internal error")

        return protocol_handler


router = APIRouter(prefix=codec.PREFIX, tags=["Open Inference Protocol (V2)"], route_class=ProtocolRoute)

SERVER_NAME = "mobilenet-serve"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "parameters"]
# ONNX Runtime outputs in one fixed order, so a V2 request asking for logits batches with /classify.
ORT_ORDER = ("logits", "embedding", "features_s8", "features_s16", "features_s32", "seg_logits")
LABELLED = frozenset({"logits", PROBABILITIES})
# Converting a big tensor from or to JSON takes milliseconds: past these sizes it runs in the codec pool,
# off the event loop.
OFFLOAD_BYTES = 256 * 1024
OFFLOAD_VALUES = 64 * 1024
_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

ModelName = Annotated[str, Path(description="variant name, as in /v1/models")]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": codec.ErrorResponse} for status in (400, 401, 404, 413, 415, 429, 503, 504)
}


@dataclass(frozen=True)
class Wanted:
    name: str
    binary: bool
    classification: int | None


@router.get("", response_model=codec.ServerMetadata, summary="Server metadata", responses=ERRORS)
async def server_metadata() -> Response:
    metadata = codec.ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)
    return JsonResponse(metadata.model_dump())


@router.get("/health/live", summary="Liveness: 200 while the process serves HTTP", response_class=Response)
async def server_live() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready", summary="Readiness: 200 once the models are loaded and warm, else 400", response_class=Response
)
async def server_ready(request: Request) -> Response:
    return Response(status_code=200 if _context(request).registry.ready else 400)


@router.get("/models/{name}", response_model=codec.ModelMetadata, summary="Model metadata", responses=ERRORS)
@router.get("/models/{name}/versions/{version}", response_model=codec.ModelMetadata, include_in_schema=False)
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
    registry = _context(request).registry
    loaded = registry.ready and registry.states[name].status is Status.LOADED
    return Response(status_code=200 if loaded else 400)


@router.get("/models/{name}/config", summary="Triton model configuration", responses=ERRORS)
@router.get("/models/{name}/versions/{version}/config", include_in_schema=False)
async def get_model_config(request: Request, name: ModelName) -> Response:
    return JsonResponse(model_config(_context(request), _known_variant(request, name)))


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
    ctx = _context(request)
    served = _served(request, name)
    body = codec.decompress(await request.body(), request.headers.get("content-encoding"), ctx.settings.max_body_bytes)
    header_length = request.headers.get(codec.HEADER_LENGTH)
    if len(body) > OFFLOAD_BYTES:
        parsed, inputs = await ctx.pipeline.run_in_pool(codec.parse_request, body, header_length)
    else:
        parsed, inputs = codec.parse_request(body, header_length)
    if len(inputs) != 1:
        names = ", ".join(repr(t.name) for t in inputs)
        raise ServiceError(400, f"send exactly one input, {IMAGE!r} or {IMAGE_BYTES!r}; got {names}")
    variant = served.variant
    wanted = _wanted_outputs(parsed, variant)
    specs = output_specs(variant)
    sources = tuple(o for o in ORT_ORDER if any(o in specs[w.name].sources for w in wanted))
    tensor = inputs[0]
    if tensor.name == IMAGE:
        rows = await _run_tensor(ctx, served, tensor, parsed.parameters, sources, started)
    elif tensor.name == IMAGE_BYTES:
        rows = await _run_encoded(ctx, served, tensor, parsed.parameters, sources, started)
    else:
        raise ServiceError(400, f"unknown input {tensor.name!r}; {variant.name} takes {IMAGE!r} or {IMAGE_BYTES!r}")
    outputs = [_output(w, rows, sources, variant) for w in wanted]
    if sum(o.value.size for o in outputs if isinstance(o.value, np.ndarray) and not o.binary) > OFFLOAD_VALUES:
        encoded = await ctx.pipeline.run_in_pool(codec.encode_response, variant.name, MODEL_VERSION, parsed.id, outputs)
    else:
        encoded = codec.encode_response(variant.name, MODEL_VERSION, parsed.id, outputs)
    payload, json_length = encoded
    headers = {} if json_length is None else {codec.HEADER_LENGTH: str(json_length)}
    encoding = codec.accepted_encoding(request.headers.get("accept-encoding"))
    if encoding is not None:
        payload = await ctx.pipeline.run_in_pool(codec.compress, payload, encoding)
        headers["Content-Encoding"] = encoding
    media = "application/json" if json_length is None else "application/octet-stream"
    return Response(payload, media_type=media, headers=headers)


@router.api_route("/{path:path}", methods=_ANY_METHOD, include_in_schema=False)
async def unmatched(request: Request, path: str) -> Response:
    """Protocol-shaped 404 and 405 for the rest of /v2, where Starlette would answer in the REST format."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is not unmatched:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:
                allowed = ", ".join(sorted(route.methods or ()))
                return codec.error_response(
                    405, f"{request.method} is not allowed on {request.url.path}", headers={"Allow": allowed}
                )
    return codec.error_response(404, f"{request.url.path} is not an endpoint of this server")


async def _run_tensor(
    ctx: Context,
    served: Served,
    tensor: codec.InputTensor,
    parameters: dict[str, Any],
    sources: tuple[str, ...],
    started: float,
) -> list[list[np.ndarray]]:
    variant = served.variant
    _check_datatype(tensor, "FP32")
    shape = tensor.shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] not in variant.resolutions:
        raise ServiceError(
            400,
            f"input {IMAGE!r} has shape {list(shape)}; {variant.name} takes [N, 3, S, S] "
            f"with S one of {list(variant.resolutions)}",
        )
    _check_batch(ctx, shape[0])
    requested = parameters.get("resolution")
    if requested is not None and requested != shape[2]:
        raise ServiceError(400, f"parameter resolution={requested!r} contradicts the input's size {shape[2]}")
    if tensor.raw is None and tensor.count > OFFLOAD_VALUES:
        batch = await ctx.pipeline.run_in_pool(codec.fp32_array, tensor)
    else:
        batch = codec.fp32_array(tensor)
    return await ctx.pipeline.infer_tensors(served, list(batch), shape[2], sources, started)


async def _run_encoded(
    ctx: Context,
    served: Served,
    tensor: codec.InputTensor,
    parameters: dict[str, Any],
    sources: tuple[str, ...],
    started: float,
) -> list[list[np.ndarray]]:
    variant = served.variant
    _check_datatype(tensor, "BYTES")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise ServiceError(400, f"input {IMAGE_BYTES!r} has shape {list(tensor.shape)}; it takes [N, 1] or [N]")
    _check_batch(ctx, tensor.shape[0])
    resolution = parameters.get("resolution", variant.native_resolution)
    if isinstance(resolution, bool) or resolution not in variant.resolutions:
        raise ServiceError(
            400,
            f"parameter resolution={resolution!r} is not offered by {variant.name}; "
            f"choose one of {list(variant.resolutions)}",
        )
    images = codec.bytes_elements(tensor)
    results = await ctx.pipeline.infer(served, images, int(resolution), sources, started)
    return [result.outputs for result in results]


def _wanted_outputs(parsed: codec.InferenceRequest, variant: Variant) -> list[Wanted]:
    default_binary = _flag(parsed.parameters, "binary_data_output", "request parameter")
    specs = output_specs(variant)
    if not parsed.outputs:
        return [Wanted(name, default_binary, None) for name in default_outputs(variant)]
    wanted = []
    for output in parsed.outputs:
        if output.name not in specs:
            raise ServiceError(400, f"unknown output {output.name!r}; {variant.name} offers {', '.join(specs)}")
        if any(key.startswith("shared_memory") for key in output.parameters):
            raise ServiceError(400, f"output {output.name!r}: shared memory is not supported by this server")
        binary = output.parameters.get("binary_data")
        binary = default_binary if binary is None else _flag(output.parameters, "binary_data", output.name)
        count = output.parameters.get("classification")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ServiceError(400, f"output {output.name!r}: classification must be a positive integer")
            if output.name not in LABELLED:
                raise ServiceError(400, f"output {output.name!r} has no classes; classify logits or probabilities")
        wanted.append(Wanted(output.name, binary, count))
    return wanted


def _output(
    wanted: Wanted, rows: list[list[np.ndarray]], sources: tuple[str, ...], variant: Variant
) -> codec.OutputTensor:
    source = output_specs(variant)[wanted.name].sources[0]
    value = np.stack([row[sources.index(source)] for row in rows])
    if wanted.name == PROBABILITIES:
        value = _softmax(value)
    if wanted.classification is None:
        return codec.OutputTensor(wanted.name, "FP32", value, value.shape, wanted.binary)
    return codec.classification(wanted.name, value, wanted.classification, variant.labels, wanted.binary)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax computed in float64, as /classify computes its scores."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.astype(np.float32)


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ServiceError(400, f"{where}: {key} must be true or false, got {value!r}")
    return value


def _check_datatype(tensor: codec.InputTensor, expected: str) -> None:
    if tensor.datatype != expected:
        raise ServiceError(400, f"input {tensor.name!r} must be {expected}, got {tensor.datatype}")


def _check_batch(ctx: Context, count: int) -> None:
    limit = ctx.settings.max_images_per_request
    if not 1 <= count <= limit:
        raise ServiceError(400, f"a request carries 1 to {limit} images (max_batch_size), got {count}")


def _known_variant(request: Request, name: str) -> Variant:
    """The variant of a model this server serves or is loading; 404 for any other name or version."""
    registry = _context(request).registry
    state = registry.states.get(name)
    if state is None or state.variant is None or state.status is Status.NOT_CONFIGURED:
        raise ServiceError(404, f"unknown model {name!r}; served: {', '.join(registry.loaded_names()) or 'none'}")
    request.state.model = name
    # Only the /versions/{version}/ routes have this path parameter.
    version = request.path_params.get("version")
    if version is not None and version != MODEL_VERSION:
        raise ServiceError(404, f"model {name!r} has no version {version!r}; its only version is {MODEL_VERSION!r}")
    return state.variant


def _served(request: Request, name: str) -> Served:
    variant = _known_variant(request, name)
    # Any task of the variant: resolve() then applies REST's readiness and availability checks.
    return _context(request).registry.resolve(name, min(variant.tasks))


def _context(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]
