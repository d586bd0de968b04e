"""The app factory: wires settings, registry, core, metrics, middleware, error handlers and routes together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import SecretStr

from . import __version__, rest, rest_status, v2, web
from .auto_select import follow_load
from .config import Settings
from .core import Core
from .error_handlers import ErrorFormats, install_error_handlers
from .grpc import GrpcServer
from .heap_trim import PeriodicTrim
from .metrics import Metrics
from .middleware import UNAUTHENTICATED_PATHS, ApiKeyMiddleware, BodyLimitMiddleware, ObservabilityMiddleware
from .openapi_security import openapi_with_keys
from .registry import Registry
from .repository import POLL, Repository
from .store_watch import StoreWatch

log = logging.getLogger("mobilenet_serve.app")

DESCRIPTION = (
    "MobileNet inference over HTTP: ImageNet classes, embeddings, backbone features, "
    "detections and masks, with dynamic batching on ONNX Runtime."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    registry = Registry(settings, metrics)
    core = Core(settings, registry)
    repository = Repository(registry, metrics, settings.model_control_mode)
    grpc_server = None
    if settings.grpc_port:
        keys = (_secret(settings.api_key), _secret(settings.admin_api_key))
        grpc_server = GrpcServer(settings, core, repository, metrics, *keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # On the same loop, sharing the core: gRPC answers ServerLive at once and ServerReady once loaded.
        if grpc_server is not None:
            await grpc_server.start()
        # Loading runs beside the server so /healthz answers and /readyz says 503 until models are warm.
        loading = asyncio.create_task(registry.load(), name="load-models")
        loading.add_done_callback(_report_crash)
        watching = asyncio.create_task(
            _watch_when_loaded(loading, StoreWatch(registry, metrics), settings.store_check_interval_seconds),
            name="watch-store",
        )
        polling = asyncio.create_task(_poll_when_loaded(loading, repository, settings), name="poll-store")
        following = asyncio.create_task(follow_load(lambda: registry.auto), name="auto-follow-load")
        trimming = PeriodicTrim(settings.heap_trim_interval_seconds) if settings.heap_trim_interval_seconds else None
        if trimming is not None:
            trimming.start()
        try:
            yield
        finally:
            # gRPC began to drain with HTTP at SIGTERM; its calls in flight finish here (without SIGTERM, it stops now).
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_grace_seconds)
            tasks = (loading, watching, polling, following)
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if trimming is not None:
                trimming.stop()
            await registry.close(settings.shutdown_grace_seconds)
            core.close()
            log.info("shut down")

    # The docs are web.py's: served from the package's own copies of Swagger UI and ReDoc, not a CDN.
    app = FastAPI(
        title="mobilenet-serve", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None,
    )  # fmt: skip
    keyed = settings.api_key is not None or settings.admin_api_key is not None
    app.openapi = openapi_with_keys(app, keyed, UNAUTHENTICATED_PATHS)  # type: ignore[method-assign]
    app.state.core = core
    app.state.repository = repository
    app.state.metrics = metrics
    # What DrainingServer starts when SIGTERM arrives, beside closing HTTP's listener.
    app.state.drain_hooks = (
        [] if grpc_server is None else [lambda: grpc_server.begin_stop(settings.shutdown_grace_seconds)]
    )
    routers = (rest.router, rest_status.router, v2.router)
    for router in routers:
        app.include_router(router)
    web.install(app)
    formats = ErrorFormats()
    formats.register(v2.PREFIX, v2.ERRORS)
    install_error_handlers(app, formats)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_buffered_bytes=settings.max_buffered_body_bytes,
        formats=formats,
    )
    if keyed:
        app.add_middleware(
            ApiKeyMiddleware,
            api_key=_secret(settings.api_key),
            admin_key=_secret(settings.admin_api_key),
            formats=formats,
        )
    # FastAPI's own routes (the docs) and ours, which recent FastAPI keeps inside the routers it includes.
    routes = [route for route in app.routes if getattr(route, "path", None)]
    routes += [route for router in routers for route in router.routes]
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, routes=routes, log_operational=settings.access_log_operational
    )
    return app


async def _poll_when_loaded(loading: asyncio.Task[None], repository: Repository, settings: Settings) -> None:
    if settings.model_control_mode == POLL:
        await asyncio.wait([loading])
        await repository.poll(settings.repository_poll_seconds)


async def _watch_when_loaded(loading: asyncio.Task[None], watch: StoreWatch, interval_seconds: float) -> None:
    # After loading, so the first pass covers every model that loaded; waiting never cancels the loading.
    await asyncio.wait([loading])
    await watch.run(interval_seconds)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the models failed", exc_info=task.exception())
