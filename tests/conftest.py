"""Shared fixtures: one real server (uvicorn in a subprocess) for the service tests of the whole session."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest
from helpers_service import DEEPLAB, TV_FP32, TV_INT8, V1, ServerProcess, start_server

# Only what the tests need, so start-up stays quick on two cores.
SERVER_MODELS = [TV_FP32, TV_INT8, V1, DEEPLAB]
SERVER_MAX_BODY_BYTES = 4 * 1024 * 1024
SERVER_CONFIG = {
    "models": SERVER_MODELS,
    "max_body_bytes": SERVER_MAX_BODY_BYTES,
    "max_image_pixels": 30_000_000,
    "intra_op_threads": 2,
    "default_batching": {"max_batch_size": 8, "max_queue_delay_ms": 20, "max_queue_size": 128, "timeout_ms": 60_000},
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("server"), SERVER_CONFIG)
    yield process
    process.stop(signal.SIGTERM)


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http
