"""The REST inference routes: read the images out of the request, answer through the core.

A request carries one image as its raw body, or one or more multipart/form-data `file` parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from .auto_select import AUTO
from .core import Core, resolution_for
from .errors import ServiceError
from .postprocess import MIN_REGION_FRACTION
from .schemas import ERRORS, ClassifyResponse, DetectResponse, EmbedResponse
from .tasks import TASKS, Task

router = APIRouter()

RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp"}
    | {"image/gif", "image/tiff"}
    # Clients that cannot name the type; the decoder sniffs the format and enforces the whitelist.
    | {"application/octet-stream"}
)
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"
# The request body as OpenAPI describes it, so /docs offers an upload button.
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, or one or more `file` parts in multipart/form-data.",
        "content": {
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff")
            },
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": [FILE_FIELD],
                }
            },
        },
    }
}

ModelQuery = Annotated[str | None, Query(description="variant name; omitted: the server's default for this task")]
ClassifyModelQuery = Annotated[
    str | None,
    Query(
        description="variant name, or `auto` for the most accurate point predicted within `latency_budget_ms`; "
        "omitted: the server's default"
    ),
]
ResolutionQuery = Annotated[
    int | None, Query(ge=1, le=4096, description="input size; one of the variant's `resolutions` (default: native)")
]
BudgetQuery = Annotated[
    float | None,
    Query(
        gt=0, allow_inf_nan=False,
        description="with model=auto: the latency in ms to choose for, at most the request deadline "
        "(default: auto.default_budget_ms)",
    ),
]  # fmt: skip
MinTop1Query = Annotated[
    float | None,
    Query(ge=0, le=100, allow_inf_nan=False, description="with model=auto: the least top-1 (percent) to accept"),
]
OverBudgetQuery = Annotated[
    Literal["answer", "refuse"] | None,
    Query(
        description="with model=auto, where no point is predicted within the budget: `answer` from the cheapest "
        "point (the default), or `refuse` at once (429 over_budget) and give up (504) once the budget has passed",
    ),
]


async def _serve(
    request: Request,
    endpoint: str,
    model: str | None,
    resolution: int | None,
    options_for: Callable[[Task], dict[str, Any]] | None = None,
    **options: Any,
) -> Response:
    """Answer a route; `options_for` gives the options of the task the model runs, where the route serves several."""
    started = time.perf_counter()
    core: Core = request.app.state.core
    if model == AUTO and AUTO not in core.registry.states:
        raise ServiceError(400, f"model=auto is offered on /classify only, not on /{endpoint}", code="unsupported_task")
    if model in core.registry.states:
        # Only names from the store become label values: a client must not mint new metric series.
        request.state.model = model
    loaded, task = core.resolve_route(model, endpoint)
    request.state.model = loaded.variant.name
    size = resolution_for(loaded.variant, resolution)
    if options_for is not None:
        options = options_for(task)
    images = await read_images(request, core.settings.max_images_per_request)
    encoded = await core.answer(task, loaded, size, images, started, **options)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


def _only_for(task: Task, wanted: str, **given: Any) -> None:
    """Refuse a parameter that the model's task does not take (`given`: the parameters of the other task)."""
    if task.name != wanted:
        for name, value in given.items():
            if value is not None and value is not False:
                raise ServiceError(
                    422, f"{name} does not apply to {task.name} (the model's task on this route)",
                    code="invalid_parameter",
                )  # fmt: skip


async def _serve_auto(
    request: Request,
    resolution: int | None,
    budget_ms: float | None,
    min_top1: float | None,
    over_budget: str | None,
    k: int,
) -> Response:
    """/classify with the point chosen by auto_select.py for the request's budget and the load now."""
    started = time.perf_counter()
    core: Core = request.app.state.core
    if resolution is not None:
        raise ServiceError(
            422, "model=auto chooses the resolution itself: leave out resolution, or name a model",
            code="invalid_parameter",
        )  # fmt: skip
    selector = core.auto_selector()
    budget = core.settings.auto.default_budget_ms if budget_ms is None else budget_ms
    deadline_ms = core.settings.default_batching.timeout_ms
    if budget > deadline_ms:
        raise ServiceError(
            422, f"latency_budget_ms {budget:g} is beyond the request deadline ({deadline_ms:g} ms)",
            code="invalid_parameter",
        )  # fmt: skip
    images = await read_images(request, core.settings.max_images_per_request)
    choice = selector.choose(budget, min_top1, len(images))
    refuse = over_budget == "refuse"
    if refuse and not choice.within_budget:
        request.state.model = choice.point.model  # throttled, like a full queue: on the cheapest point's metrics
        raise choice.over_budget()
    task = TASKS["classify"]
    loaded = core.resolve(choice.point.model, task)
    request.state.model = loaded.variant.name
    # A client that would rather be refused than answered late gains nothing from an answer past its budget.
    deadline = started + budget / 1000.0 if refuse else None
    encoded = await core.answer(
        task, loaded, choice.point.resolution, images, started, deadline, k=k, selection=choice.describe()
    )
    selector.observe(choice, time.perf_counter() - started)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


async def read_images(request: Request, max_images: int) -> list[bytes]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == MULTIPART:
        return await _read_multipart(request, max_images)
    if media in RAW_IMAGE_TYPES:
        return [await request.body()]
    raise ServiceError(
        415,
        f"Content-Type {media or '(none)'!r} is not accepted; send the image as image/jpeg, image/png, "
        "image/webp, image/bmp, image/gif or image/tiff, or as multipart/form-data with `file` parts",
    )


async def _read_multipart(request: Request, max_images: int) -> list[bytes]:
    async with request.form(max_files=max_images, max_fields=max_images + 16) as form:
        files = [value for key, value in form.multi_items() if key == FILE_FIELD and isinstance(value, UploadFile)]
        if not files:
            others = sorted({key for key, _ in form.multi_items()})
            raise ServiceError(
                400,
                f"multipart body has no {FILE_FIELD!r} part" + (f" (found: {', '.join(others)})" if others else ""),
                code="missing_file",
            )
        return [await upload.read() for upload in files]


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Top-k classes for each image",
    openapi_extra=IMAGE_BODY,
    responses=ERRORS,
)
async def classify(
    request: Request,
    model: ClassifyModelQuery = None,
    top_k: Annotated[int, Query(ge=1, le=1000)] = 5,
    resolution: ResolutionQuery = None,
    latency_budget_ms: BudgetQuery = None,
    min_top1: MinTop1Query = None,
    over_budget: OverBudgetQuery = None,
) -> Response:
    if model == AUTO:
        return await _serve_auto(request, resolution, latency_budget_ms, min_top1, over_budget, top_k)
    if latency_budget_ms is not None or min_top1 is not None or over_budget is not None:
        raise ServiceError(
            422, "latency_budget_ms, min_top1 and over_budget apply to model=auto only", code="invalid_parameter"
        )
    return await _serve(request, "classify", model, resolution, k=top_k)


@router.post(
    "/embed",
    response_model=EmbedResponse,
    summary="Pooled feature vector for each image",
    openapi_extra=IMAGE_BODY,
    responses=ERRORS,
)
async def embed(
    request: Request,
    model: ModelQuery = None,
    resolution: ResolutionQuery = None,
    normalize: Annotated[bool, Query(description="L2-normalise the embedding")] = True,
) -> Response:
    return await _serve(request, "embed", model, resolution, normalize=normalize)


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
    openapi_extra=IMAGE_BODY,
)
async def backbone(request: Request, model: ModelQuery = None, resolution: ResolutionQuery = None) -> Response:
    return await _serve(request, "backbone", model, resolution)


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="Boxes: PASCAL VOC objects from DeepLabV3's mask, or faces from a BlazeFace single-shot detector",
    description=(
        "With a DeepLab model (the default; `method` is `mask_regions`), each connected region (8-connectivity) "
        "of a class in the mask, mapped to the original image size, becomes a box scored by the class's mean "
        "probability over the region; background and regions under `min_area` "
        f"(default {MIN_REGION_FRACTION:.1%}) of the image are dropped. With a face detector "
        "(`model=blazeface_short_range` or `blazeface_full_range`; `method` is `ssd`), MediaPipe's decoding: "
        "anchors, boxes and 6 keypoints, scores at least `min_score` (default: the model's own, 0.5 or 0.6), "
        "weighted non-maximum suppression, mapped back through the letterbox to the original image."
    ),
    openapi_extra=IMAGE_BODY,
    responses=ERRORS,
)
async def detect(
    request: Request,
    model: ModelQuery = None,
    resolution: ResolutionQuery = None,
    min_area: Annotated[
        float | None,
        Query(ge=0.0, lt=1.0, description="DeepLab: smallest region kept, as a fraction of the image's pixels"),
    ] = None,
    min_score: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="face detectors: lowest score kept (default: the model's)")
    ] = None,
) -> Response:
    def options_for(task: Task) -> dict[str, Any]:
        _only_for(task, "detect", min_area=min_area)
        _only_for(task, "face_detect", min_score=min_score)
        if task.name == "face_detect":
            return {"min_score": min_score}
        return {"min_area": MIN_REGION_FRACTION if min_area is None else min_area}

    return await _serve(request, "detect", model, resolution, options_for)


@router.post(
    "/segment",
    summary="The class mask as a PNG at the original size, or the person mask or matte",
    description=(
        "With a DeepLab model (the default), a palette PNG whose pixel values are PASCAL VOC class ids (coloured "
        "with the VOC palette). With `model=selfie_segmentation`, a palette PNG with 1 where the person is "
        "(probability above 0.5) and 0 elsewhere, or with `matte=true` a greyscale PNG of the probability "
        "(0..255), to use as an alpha channel. One image per request."
    ),
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    openapi_extra=IMAGE_BODY,
)
async def segment(
    request: Request,
    model: ModelQuery = None,
    resolution: ResolutionQuery = None,
    matte: Annotated[bool, Query(description="person segmenter: the probability as 8-bit grey, not the mask")] = False,
) -> Response:
    def options_for(task: Task) -> dict[str, Any]:
        _only_for(task, "person_segment", matte=matte)
        return {"matte": matte} if task.name == "person_segment" else {}

    return await _serve(request, "segment", model, resolution, options_for)
