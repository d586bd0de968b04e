"""The REST routes that describe the server: its models and their trade-offs, liveness, readiness, metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from .auto_select import AutoSelector, Unavailable
from .core import Core
from .error_handlers import error_response, request_id_of
from .errors import ServiceError
from .frontier import served_points
from .metrics import CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, Metrics
from .registry import ModelState, Status
from .responses import JsonResponse
from .schemas import ErrorBody, Health, ModelInfo, ModelList, Tradeoffs
from .tasks import TASKS, default_task
from .tradeoffs import PROFILE_NAME

router = APIRouter()


def _core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


@router.get("/v1/models", response_model=ModelList, summary="Every variant in the store, loaded or not")
async def list_models(request: Request) -> Response:
    core = _core(request)
    models = [_model_info(core, state) for state in core.registry.states.values()]
    return JsonResponse({**core.registry.defaults, "models": models})


@router.get("/v1/models/{name}", response_model=ModelInfo, summary="One variant", responses={404: {"model": ErrorBody}})
async def get_model(request: Request, name: Annotated[str, Path()]) -> Response:
    core = _core(request)
    states = core.registry.states
    state = states.get(name)
    if state is None:
        raise ServiceError(
            404, f"model {name!r} is not in the model store; known: {', '.join(states)}",
            code="unknown_model", available=list(states),
        )  # fmt: skip
    return JsonResponse(_model_info(core, state))


def _model_info(core: Core, state: ModelState) -> dict[str, object]:
    defaults = core.registry.defaults
    loaded = state.status is Status.LOADED
    return {
        "name": state.name,
        "status": state.status.value,
        "loaded": loaded,
        "error": state.error,
        "store_intact": state.store_intact,
        "store_problem": state.store_problem,
        "default_for": [
            f"/{task.route}"
            for task in TASKS.values()
            if defaults[task.default] == state.name and default_task(task.route, defaults) is task
        ],
        "batching": core.settings.batching_for(state.name).model_dump() if loaded else None,
        "manifest": state.variant.manifest if state.variant else None,
    }


@router.get(
    "/v1/tradeoffs",
    response_model=Tradeoffs,
    summary="Accuracy against latency on this host of every served ImageNet classifier at every resolution",
    responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def tradeoffs(request: Request) -> Response:
    registry = _core(request).registry
    if not registry.ready:
        raise ServiceError(
            503, "models are still loading; retry shortly", code="not_ready", headers={"Retry-After": "1"}
        )
    profile = registry.profile
    if profile is None:
        raise ServiceError(
            404, f"the model store has no trade-off profile ({PROFILE_NAME}); python -m service.tradeoffs writes one",
            code="no_profile",
        )  # fmt: skip
    points = served_points(profile, [model.variant for model in registry.classifiers()], registry.timings)
    auto = registry.auto
    auto_info = {
        "available": isinstance(auto, AutoSelector),
        "reason": auto.reason if isinstance(auto, Unavailable) else None,
        "default_budget_ms": _core(request).settings.auto.default_budget_ms,
        "points": [{"model": p.model, "resolution": p.resolution} for p in auto.frontier]
        if isinstance(auto, AutoSelector)
        else [],
    }
    return JsonResponse(
        {"dataset": profile.dataset.model_dump(), "command": profile.command, "points": points, "auto": auto_info}
    )


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
    registry = _core(request).registry
    if registry.ready:
        return JsonResponse({"status": "ready"})
    return error_response(
        503, registry.load_error or "models are loading", "not_ready", request_id=request_id_of(request.scope)
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (OpenMetrics when the scraper's Accept asks for it)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}, OPENMETRICS_CONTENT_TYPE: {}}}},
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, media_type = registry.render(request.headers.get("accept", ""))
    return Response(body, media_type=media_type)
