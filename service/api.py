"""HTTP endpoints: parse the request, run the pipeline, encode the answer."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from . import postprocess
from .config import Settings
from .errors import ServiceError, error_response
from .inputs import OPENAPI_IMAGE_BODY, read_images
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import ImageResult, Pipeline
from .registry import ModelState, Registry, Status
from .responses import JsonResponse
from .routing import LeanRoute
from .runtime import TASK_OUTPUTS
from .schemas import (
    ClassifyResponse,
    DetectResponse,
    EmbedResponse,
    ErrorBody,
    Health,
    ModelInfo,
    ModelList,
)
from .store import Variant

router = APIRouter(route_class=LeanRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 413, 415, 422, 429, 503, 504)
}

ModelQuery = Annotated[str | None, Query(description="variant name; omitted: the server's default for this task")]
ResolutionQuery = Annotated[
    int | None, Query(ge=1, le=4096, description="input size; one of the variant's `resolutions` (default: native)")
]


@dataclass(frozen=True)
class Context:
    """What the endpoints share, stored on app.state.context."""

    settings: Settings
    registry: Registry
    pipeline: Pipeline
    metrics: Metrics


def _context(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


async def _run(
    request: Request, model: str | None, task: str, resolution: int | None
) -> tuple[Variant, int, list[ImageResult]]:
    started = time.perf_counter()
    ctx = _context(request)
    if model in ctx.registry.states:
        # Only names from the store become label values: a client must not mint new metric series.
        request.state.model = model
    served = ctx.registry.resolve(model, task)
    request.state.model = served.variant.name
    size = _checked_resolution(served.variant, resolution)
    images = await read_images(request, ctx.settings.max_images_per_request)
    outputs = TASK_OUTPUTS["segment" if task == "detect" else task]
    results = await ctx.pipeline.infer(served, images, size, outputs, started)
    return served.variant, size, results


def _checked_resolution(variant: Variant, resolution: int | None) -> int:
    if resolution is None:
        return variant.native_resolution
    if resolution not in variant.resolutions:
        raise ServiceError(
            422,
            f"resolution {resolution} is not offered by {variant.name}; choose one of {list(variant.resolutions)}",
            code="invalid_parameter",
        )
    return resolution


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Top-k classes for each image",
    openapi_extra=OPENAPI_IMAGE_BODY,
    responses=ERRORS,
)
async def classify(
    request: Request,
    model: ModelQuery = None,
    top_k: Annotated[int, Query(ge=1, le=1000)] = 5,
    resolution: ResolutionQuery = None,
) -> Response:
    variant, size, results = await _run(request, model, "classify", resolution)
    answers = []
    for result in results:
        ids, scores = postprocess.top_k(result.outputs[0], top_k)
        answers.append(
            {
                "predictions": [
                    {"class_id": int(i), "label": variant.labels[i], "score": float(s)}
                    for i, s in zip(ids, scores, strict=True)
                ]
            }
        )
    return JsonResponse({"model": variant.name, "resolution": size, "results": answers})


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Pooled feature vector for each image",
    openapi_extra=OPENAPI_IMAGE_BODY,
    responses=ERRORS,
)
async def embed(
    request: Request,
    model: ModelQuery = None,
    resolution: ResolutionQuery = None,
    normalize: Annotated[bool, Query(description="L2-normalise the embedding")] = True,
) -> Response:
    variant, size, results = await _run(request, model, "embed", resolution)
    vectors = [postprocess.l2_normalize(r.outputs[0]) if normalize else r.outputs[0] for r in results]
    return JsonResponse(
        {
            "model": variant.name,
            "resolution": size,
            "dim": int(vectors[0].shape[0]),
            "normalized": normalize,
            "results": [{"embedding": vector} for vector in vectors],
        }
    )


@router.post(
    "/backbone",
    summary="Feature maps at strides 8, 16 and 32, as .npz",
    description=(
        "Returns `application/x-npz` (read it with `numpy.load(io.BytesIO(body))`): float32 arrays `s8`, `s16`, `s32`, "
        "each [C, H, W] for one image, or [N, C, H, W] for N images. "
        "Header `X-Feature-Shapes` gives the shapes as JSON."
    ),
    response_class=Response,
    responses={200: {"content": {"application/x-npz": {}}}, **ERRORS},
    openapi_extra=OPENAPI_IMAGE_BODY,
)
async def backbone(request: Request, model: ModelQuery = None, resolution: ResolutionQuery = None) -> Response:
    variant, size, results = await _run(request, model, "backbone", resolution)
    keys = ("s8", "s16", "s32")
    if len(results) == 1:
        arrays = dict(zip(keys, results[0].outputs, strict=True))
    else:
        arrays = {key: np.stack([r.outputs[i] for r in results]) for i, key in enumerate(keys)}
    body = await _context(request).pipeline.run_in_pool(postprocess.encode_npz, arrays)
    shapes = {key: list(array.shape) for key, array in arrays.items()}
    return Response(
        body,
        media_type="application/x-npz",
        headers={"X-Feature-Shapes": json.dumps(shapes), "X-Model": variant.name, "X-Resolution": str(size)},
    )


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="Objects as boxes from DeepLabV3's PASCAL VOC segmentation",
    description=(
        "Each connected region (8-connectivity) of a class in the mask, mapped to the original image size, "
        "becomes a box "
        "scored by the class's mean probability over the region; background and regions under `min_area` "
        f"(default {postprocess.MIN_REGION_FRACTION:.1%}) of the image are dropped."
    ),
    openapi_extra=OPENAPI_IMAGE_BODY,
    responses=ERRORS,
)
async def detect(
    request: Request,
    model: ModelQuery = None,
    resolution: ResolutionQuery = None,
    min_area: Annotated[
        float, Query(ge=0.0, lt=1.0, description="smallest region kept, as a fraction of the image's pixels")
    ] = postprocess.MIN_REGION_FRACTION,
) -> Response:
    variant, size, results = await _run(request, model, "detect", resolution)
    pipeline = _context(request).pipeline
    answers = []
    for result in results:
        width, height = result.image.original_size
        found = await pipeline.run_in_pool(postprocess.regions, result.outputs[0], (width, height), min_area)
        answers.append(
            {
                "width": width,
                "height": height,
                "detections": [
                    {
                        "class_id": r.class_id,
                        "label": variant.labels[r.class_id],
                        "score": r.score,
                        "box": list(r.box),
                        "area": r.area,
                    }
                    for r in found
                ],
            }
        )
    return JsonResponse({"model": variant.name, "resolution": size, "results": answers})


@router.post(
    "/segment",
    summary="The class mask as a PNG at the original size",
    description=(
        "A palette PNG whose pixel values are PASCAL VOC class ids (coloured with the VOC palette). "
        "One image per request."
    ),
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    openapi_extra=OPENAPI_IMAGE_BODY,
)
async def segment(request: Request, model: ModelQuery = None, resolution: ResolutionQuery = None) -> Response:
    variant, size, results = await _run(request, model, "segment", resolution)
    if len(results) != 1:
        raise ServiceError(400, f"/segment takes exactly one image, got {len(results)}", code="one_image_only")
    result = results[0]
    png = await _context(request).pipeline.run_in_pool(
        postprocess.mask_png, result.outputs[0], result.image.original_size
    )
    return Response(png, media_type="image/png", headers={"X-Model": variant.name, "X-Resolution": str(size)})


@router.get("/v1/models", response_model=ModelList, summary="Every variant in the store, loaded or not")
async def list_models(request: Request) -> Response:
    registry = _context(request).registry
    models = [_model_info(request, state) for state in registry.states.values()]
    return JsonResponse(
        {
            "default_model": registry.default_model,
            "default_segmentation_model": registry.default_segmentation_model,
            "models": models,
        }
    )


@router.get("/v1/models/{name}", response_model=ModelInfo, summary="One variant", responses={404: {"model": ErrorBody}})
async def get_model(request: Request, name: Annotated[str, Path()]) -> Response:
    registry = _context(request).registry
    state = registry.states.get(name)
    if state is None:
        raise ServiceError(
            404, f"model {name!r} is not in the model store; known: {', '.join(registry.states)}",
            code="unknown_model", available=list(registry.states),
        )  # fmt: skip
    return JsonResponse(_model_info(request, state))


def _model_info(request: Request, state: ModelState) -> dict[str, object]:
    ctx = _context(request)
    registry = ctx.registry
    default_for = []
    if state.name == registry.default_model:
        default_for += ["/classify", "/embed", "/backbone"]
    if state.name == registry.default_segmentation_model:
        default_for += ["/detect", "/segment"]
    batching = ctx.settings.batching_for(state.name).model_dump() if state.status is Status.LOADED else None
    return {
        "name": state.name,
        "status": state.status.value,
        "loaded": state.status is Status.LOADED,
        "error": state.error,
        "store_intact": state.store_intact,
        "store_problem": state.store_problem,
        "default_for": default_for,
        "batching": batching,
        "manifest": state.variant.manifest if state.variant else None,
    }


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    return JsonResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: 200 once the models are loaded and warm",
    responses={503: {"model": ErrorBody}},
)
async def readyz(request: Request) -> Response:
    registry = _context(request).registry
    if registry.ready:
        return JsonResponse({"status": "ready"})
    message = registry.load_error or "models are loading"
    return error_response(503, message, "not_ready")


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}}
)
async def metrics(request: Request) -> Response:
    return Response(_context(request).metrics.render(), media_type=CONTENT_TYPE)
