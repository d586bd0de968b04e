"""Connections a client opens and does not use: header size, read deadlines, idle time, a connection cap, and
the cap on request bodies in progress.

    python -m pytest tests/reliability/test_connections.py
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import ServerProcess, running_server
from support import V1_SMALL, image_bytes

LIMITS = {
    "keep_alive_timeout_seconds": 1,
    "header_timeout_seconds": 1.0,
    "body_timeout_seconds": 1.0,
    "max_header_bytes": 8192,
    "max_connections": 100,
    "max_body_bytes": 2_000_000,
    "max_buffered_body_bytes": 3_000_000,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"models": [V1_SMALL], "default_model": V1_SMALL, "intra_op_threads": 2, **LIMITS}
    with running_server(tmp_path_factory.mktemp("connections"), config) as process:
        yield process


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, received = time.perf_counter(), b""
    sock.settimeout(limit)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received, time.perf_counter() - started
        received += chunk


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        received, elapsed = _read_until_closed(sock, 10)
    assert received == b"" and elapsed < LIMITS["keep_alive_timeout_seconds"] + 1.5


def test_slowloris_headers_get_408_within_the_header_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.perf_counter()
        answer = b""
        sock.settimeout(10)
        while not answer and time.perf_counter() - started < 8:
            try:
                sock.sendall(b"X")  # one byte a tick, never ending the headers
            except OSError:
                break
            try:
                sock.settimeout(0.25)
                answer = sock.recv(65536)
            except TimeoutError:
                continue
        elapsed = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert error_code(answer) == "request_timeout"
    assert elapsed < LIMITS["header_timeout_seconds"] + 1.5


def test_a_body_that_never_finishes_is_dropped_within_the_body_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
        sock.sendall(head + b"\xff\xd8\xff" + b"\0" * 100)
        _, elapsed = _read_until_closed(sock, 10)
    assert elapsed < LIMITS["body_timeout_seconds"] + 1.5


def error_code(answer: bytes) -> str:
    """The `error.code` of a refusal written before any request was read: JSON, like the app's errors."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return str(json.loads(body)["error"]["code"])


def test_headers_over_the_limit_get_431(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        received, _ = _read_until_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 431"), received[:100]
    assert error_code(received) == "headers_too_large"


def test_thousands_of_half_open_connections_get_503_and_the_server_keeps_serving(server: ServerProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(3000, hard - 200)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 200), hard))
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_connect(server))
        refused = 0
        for sock in sockets[LIMITS["max_connections"] :]:
            received, _ = _read_until_closed(sock, 10)
            if received.startswith(b"HTTP/1.1 503"):
                # The same JSON error body as every other refusal, and when to come back.
                assert error_code(received) == "unavailable" and b"retry-after: 1\r\n" in received
                refused += 1
        assert refused >= count - 2 * LIMITS["max_connections"], refused
        for sock in sockets:
            sock.close()
        sockets.clear()
        time.sleep(0.5)
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_bodies_in_progress_past_the_buffer_cap_get_503_until_they_finish(server: ServerProcess) -> None:
    """Two 1.5 MB uploads held open fill the 3 MB cap: a third gets 503 at once; once they end, it is served."""
    head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1500000\r\n\r\n"
    body = image_bytes("parrot.jpg")
    holding = [_connect(server), _connect(server)]
    try:
        for sock in holding:
            sock.sendall(head + b"\xff\xd8\xff")
        time.sleep(0.2)
        refused = httpx.post(server.url + "/classify", content=body, headers={"Content-Type": "image/jpeg"}, timeout=10)
    finally:
        for sock in holding:
            sock.close()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert refused.json()["error"]["code"] == "too_much_buffered"
    time.sleep(0.3)
    served = httpx.post(server.url + "/classify", content=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert served.status_code == 200, served.text
