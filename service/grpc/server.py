"""The gRPC server: a `grpc.aio` server on the app's event loop, started and stopped in its lifespan.

It shares the core (batch queues, codec pool), the repository and the metrics with HTTP, so a gRPC
request and an HTTP one can run in the same ONNX Runtime batch. Its message limits follow the HTTP
ones: a request may be as large as an HTTP body (`max_body_bytes`; grpc answers RESOURCE_EXHAUSTED
past it) and an answer as large as `max_response_bytes`, plus room for the message's own fields.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from ..config import Settings
from ..core import Core
from ..metrics import Metrics
from ..repository import Repository
from .protocol import grpc_service_pb2_grpc as pb_grpc
from .servicer import Servicer

log = logging.getLogger("mobilenet_serve.grpc")

# Names, shapes and the other fields of a message beside its tensors' bytes.
ENVELOPE_BYTES = 64 * 1024


class GrpcServer:
    def __init__(
        self, settings: Settings, core: Core, repository: Repository, metrics: Metrics,
        api_key: str | None, admin_key: str | None,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._servicer = Servicer(core, repository, metrics, api_key, admin_key)
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        settings = self._settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes + ENVELOPE_BYTES),
                ("grpc.max_send_message_length", settings.max_response_bytes + ENVELOPE_BYTES),
                # One server per port: a second process on the same port must fail, not share it.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, server)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot serve gRPC on {address}: {exc}") from exc
        await server.start()
        self._server = server
        log.info("serving the Open Inference Protocol over gRPC on %s", address)

    def begin_stop(self, grace_seconds: float) -> None:
        """Refuse new calls from now on and let those in flight finish for up to `grace_seconds`: called when
        SIGTERM starts HTTP's drain (service/draining_server.py), so that both drain at once."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(grace_seconds))

    async def stop(self, grace_seconds: float) -> None:
        """Stop (if SIGTERM did not already begin to) and wait until the calls in flight are done or cancelled."""
        self.begin_stop(grace_seconds)
        if self._stopping is not None:
            await self._stopping
