"""Overload and a short soak against a real server on loopback: bounded in request count and in time.

Overload: far more concurrent clients than the queue holds. Every request gets exactly one answer, 200 or 429
with Retry-After; the server's 200 count in /metrics equals the 200s the clients saw (nothing accepted is lost
or answered twice); RSS stays bounded; latency is back to normal within seconds.
Soak: steady load for SOAK_SECONDS; RSS growth, open file descriptors and latency drift stay within bounds.
`python -m pytest tests/test_reliability_load.py -s` reproduces both and prints the figures.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from helpers_service import V1_SMALL, ServerProcess, image_bytes, metric_value, start_server

CONFIG = {
    "models": [V1_SMALL],
    "default_model": V1_SMALL,
    "intra_op_threads": 1,
    "default_batching": {"max_batch_size": 8, "max_queue_delay_ms": 2, "max_queue_size": 16, "timeout_ms": 30_000},
}
IMAGE = image_bytes("parrot.jpg")
HEADERS = {"Content-Type": "image/jpeg"}
BURST_REQUESTS = 1200
BURST_CLIENTS = 96
RSS_BOUND_MIB = 600
# RELIABILITY_SOAK_SECONDS=600 gives the long soak recorded in docs/reliability.md.
SOAK_SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "30"))


@pytest.fixture(scope="module")
def load_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("load"), CONFIG)
    yield process
    process.stop(signal.SIGTERM)


def _latency_ms(client: httpx.Client) -> float:
    started = time.perf_counter()
    assert client.post("/classify", content=IMAGE, headers=HEADERS).status_code == 200
    return (time.perf_counter() - started) * 1000.0


def _ok_count(client: httpx.Client) -> float:
    return metric_value(client.get("/metrics").text, "mobilenet_requests_total", endpoint="/classify", code="200")


def test_overload_answers_429_or_serves_and_recovers(load_server: ServerProcess) -> None:
    proc = psutil.Process(load_server.process.pid)
    with load_server.client(timeout=60.0) as client:
        baseline = statistics.median(_latency_ms(client) for _ in range(20))
        ok_before = _ok_count(client)
    peak_rss = proc.memory_info().rss

    limits = httpx.Limits(max_connections=BURST_CLIENTS, max_keepalive_connections=BURST_CLIENTS)
    with httpx.Client(base_url=load_server.url, timeout=60.0, limits=limits) as burst:

        def one(_: int) -> tuple[int, str | None]:
            response = burst.post("/classify", content=IMAGE, headers=HEADERS)
            return response.status_code, response.headers.get("retry-after")

        with ThreadPoolExecutor(BURST_CLIENTS) as pool:
            futures = [pool.submit(one, i) for i in range(BURST_REQUESTS)]
            while not all(f.done() for f in futures):
                peak_rss = max(peak_rss, proc.memory_info().rss)
                time.sleep(0.05)
            answers = [f.result() for f in futures]

    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(429) > 0, "the burst never filled the queue"
    assert all(retry is not None and int(retry) >= 1 for status, retry in answers if status == 429)
    assert peak_rss / 2**20 < RSS_BOUND_MIB
    with load_server.client(timeout=60.0) as client:
        assert _ok_count(client) - ok_before == statuses.count(200)
        recovered_after = None
        started = time.monotonic()
        while time.monotonic() - started < 10:
            if statistics.median(_latency_ms(client) for _ in range(5)) < max(3 * baseline, baseline + 20):
                recovered_after = time.monotonic() - started
                break
        assert recovered_after is not None and recovered_after < 5
        assert client.get("/readyz").status_code == 200
    print(
        f"overload: {BURST_REQUESTS} requests from {BURST_CLIENTS} clients: {statuses.count(200)} x 200, "
        f"{statuses.count(429)} x 429; peak RSS {peak_rss / 2**20:.0f} MiB; baseline {baseline:.1f} ms; "
        f"recovered in {recovered_after:.2f} s"
    )


def test_short_soak_has_no_growth_or_drift(load_server: ServerProcess) -> None:
    proc = psutil.Process(load_server.process.pid)
    with load_server.client(timeout=60.0) as client:
        for _ in range(50):
            _latency_ms(client)
        rss_start, fds_start = proc.memory_info().rss, proc.num_fds()
        windows: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS:
            windows.append(statistics.median(_latency_ms(client) for _ in range(25)))
        rss_end, fds_end = proc.memory_info().rss, proc.num_fds()
    growth_mib = (rss_end - rss_start) / 2**20
    first, last = statistics.median(windows[:3]), statistics.median(windows[-3:])
    assert growth_mib < 30, growth_mib
    assert fds_end <= fds_start + 4, (fds_start, fds_end)
    assert last < max(2 * first, first + 10), (first, last)
    print(f"soak: {len(windows) * 25} requests; RSS +{growth_mib:.1f} MiB; fds {fds_start}->{fds_end}; "
          f"median latency {first:.1f} -> {last:.1f} ms")
