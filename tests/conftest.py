"""The one real server (uvicorn in a subprocess) that the HTTP tests of the whole session share.

Tests that need other settings start a server of their own with harness.start_server().
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from harness import ServerProcess, free_port, running_server
from helpers_perf_analyzer import PerfAnalyzerUnavailable, perf_analyzer_command
from support import DEEPLAB, TV_FP32, TV_INT8, V1

# Apps built in this process (TestClient) serve no gRPC: each would claim port 8001, and test runs side by side
# would fight over it. Servers of their own (harness.start_server) are told the same in their config.
os.environ.setdefault("MOBILENET_GRPC_PORT", "0")

# Only what the tests need, so start-up stays quick on two cores.
SERVER_MODELS = [TV_FP32, TV_INT8, V1, DEEPLAB]
SERVER_CONFIG = {
    "models": SERVER_MODELS,
    "max_body_bytes": 4 * 1024 * 1024,
    "max_image_pixels": 30_000_000,
    "intra_op_threads": 2,
    # The gRPC tests (tests/http/test_grpc.py) use this server too, so that their answers meet REST's.
    "grpc_port": free_port(),
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


@pytest.fixture(scope="session")
def perf_analyzer() -> list[str]:
    """The perf_analyzer command (tests/install_test_tools.py fetched it); a failure, not a skip, without it."""
    try:
        return perf_analyzer_command()
    except PerfAnalyzerUnavailable as exc:
        pytest.fail(f"perf_analyzer is not available: {exc}")
