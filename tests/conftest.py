"""The one real server (uvicorn in a subprocess) that the HTTP tests of the whole session share.

Tests that need other settings start a server of their own with harness.start_server().
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from harness import ServerProcess, running_server
from support import DEEPLAB, TV_FP32, TV_INT8, V1

# Only what the tests need, so start-up stays quick on two cores.
SERVER_MODELS = [TV_FP32, TV_INT8, V1, DEEPLAB]
SERVER_CONFIG = {
    "models": SERVER_MODELS,
    "max_body_bytes": 4 * 1024 * 1024,
    "max_image_pixels": 30_000_000,
    "intra_op_threads": 2,
    "default_batching": {"max_batch_size": 8, "max_queue_delay_ms": 20, "max_queue_size": 128, "timeout_ms": 60_000},
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("server"), SERVER_CONFIG) as process:
        yield process


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http
