"""`inference.GRPCInferenceService`: the Open Inference Protocol over gRPC, as thin as its HTTP routes.

Each call goes through `_call`, which does for gRPC what the HTTP middleware does: the API key (the
admin key for the repository calls), the request metrics (endpoint `grpc:<Method>`, `code` the HTTP
status the same answer has, so that the alerts on 5xx and 429 count both transports), the access
line, and a ServiceError turned into the gRPC status and the message HTTP would send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from .. import __version__, access
from ..core import Core
from ..errors import ServiceError
from ..metrics import Metrics
from ..oip import models
from ..oip.inference import OFFLOAD_BYTES, OFFLOAD_VALUES
from ..oip.inference import infer as run_inference
from ..oip.metadata import MODEL_VERSION, model_config, model_metadata
from ..repository import Repository
from . import convert
from .protocol import grpc_service_pb2 as pb
from .protocol import grpc_service_pb2_grpc as pb_grpc

log = logging.getLogger("mobilenet_serve.grpc")

SERVICE = "inference.GRPCInferenceService"
# The gRPC status of each HTTP status the core raises: 429 (a full queue) and 503 both say "retry later".
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
Reply = TypeVar("Reply")


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, core: Core, repository: Repository, metrics: Metrics, api_key: str | None, admin_key: str | None
    ) -> None:
        self.core = core
        self.repository = repository
        self.metrics = metrics
        self.api_key = None if api_key is None else api_key.encode()
        self.admin_key = None if admin_key is None else admin_key.encode()

    # Liveness and readiness: no key and no request metrics, as /v2/health/live and /ready.
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.registry.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        async def ready() -> pb.ModelReadyResponse:
            try:
                return pb.ModelReadyResponse(ready=models.is_ready(self.core, request.name, request.version))
            except ServiceError:
                return pb.ModelReadyResponse(ready=False)  # Triton answers "not ready" for an unknown model

        return await self._call("ModelReady", context, request.name, ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=models.SERVER_NAME, version=__version__, extensions=models.EXTENSIONS)

        return await self._call("ServerMetadata", context, "", metadata)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def metadata() -> pb.ModelMetadataResponse:
            variant = models.known_variant(self.core, request.name, request.version)
            return convert.model_metadata(model_metadata(variant))

        return await self._call("ModelMetadata", context, request.name, metadata)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        async def config() -> pb.ModelConfigResponse:
            variant = models.known_variant(self.core, request.name, request.version)
            return convert.model_config(model_config(self.core.settings, variant))

        return await self._call("ModelConfig", context, request.name, config)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._call("ModelInfer", context, request.model_name, lambda: self._infer(request))

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        started = time.perf_counter()
        model = models.loaded(self.core, request.model_name, request.model_version)
        parsed, inputs, size = convert.infer_request(request)
        outputs = await run_inference(self.core, model, parsed, inputs, started, size > OFFLOAD_BYTES)
        arguments = (model.variant.name, MODEL_VERSION, parsed.id, outputs)
        if sum(o.value.size for o in outputs if isinstance(o.value, np.ndarray)) > OFFLOAD_VALUES:
            return await self.core.in_pool(convert.infer_response, *arguments)
        return convert.infer_response(*arguments)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        async def index() -> pb.RepositoryIndexResponse:
            entries = await self.repository.index(ready_only=request.ready)
            response = pb.RepositoryIndexResponse()
            for entry in entries:
                response.models.add(name=entry.name, version=MODEL_VERSION, state=entry.state, reason=entry.reason)
            return response

        return await self._call("RepositoryIndex", context, "", index, admin=True)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        async def load() -> pb.RepositoryModelLoadResponse:
            _no_parameters(request.parameters, "load")
            await self.repository.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", context, request.model_name, load, admin=True)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        async def unload() -> pb.RepositoryModelUnloadResponse:
            await self.repository.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", context, request.model_name, unload, admin=True)

    async def _call(
        self, method: str, context: Any, model: str, handler: Callable[[], Awaitable[Reply]], admin: bool = False
    ) -> Reply:
        """Run `handler` with the key checked, counted, timed and logged; a ServiceError aborts the call."""
        started = time.perf_counter()
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        request_id = access.request_id([str(metadata.get("x-request-id", ""))])
        context.set_trailing_metadata((("x-request-id", request_id),))
        label = model if models.is_store_name(self.core, model) else ""
        status = 500
        try:
            self._authenticate(metadata, admin)
            reply = await handler()
            status = 200
            return reply
        except ServiceError as error:
            status = error.status
            await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)
            raise  # abort() raises; this line only tells the type checker that nothing is returned
        except Exception:
            log.exception("gRPC %s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise
        finally:
            elapsed = time.perf_counter() - started
            endpoint = f"grpc:{method}"
            self.metrics.requests.labels(endpoint, label, str(status)).inc()
            self.metrics.request_duration.labels(endpoint, label).observe(elapsed)
            access.access_line("GRPC", f"/{SERVICE}/{method}", label, status, elapsed, request_id)

    def _authenticate(self, metadata: dict[str, Any], admin: bool) -> None:
        admin = admin and self.admin_key is not None
        key = self.admin_key if admin else self.api_key
        if key is None or access.offers_key(_as_headers(metadata), key):
            return
        raise ServiceError(
            401, f"missing or wrong {'admin ' if admin else ''}API key; send it as x-api-key or authorization: Bearer"
        )


def _as_headers(metadata: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """Call metadata as the (name, value) byte pairs an HTTP request's headers are."""
    return [(name.encode("latin-1"), value if isinstance(value, bytes) else str(value).encode("latin-1"))
            for name, value in metadata.items()]  # fmt: skip


def _no_parameters(entries: Any, what: str) -> None:
    if len(entries):
        names = ", ".join(sorted(entries))
        raise ServiceError(400, f"{what} takes no parameters here (got {names}): the model store holds each config")
