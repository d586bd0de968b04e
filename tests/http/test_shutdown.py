"""Graceful shutdown: on SIGTERM, requests in flight complete and new connections are refused."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from harness import start_server
from support import DEEPLAB, V1_SMALL, image_bytes, wait_until_all_arrived

from service.draining_server import answer_backlog
from service.raw_refusal import SHUTTING_DOWN_REFUSAL


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    config = {
        "models": [DEEPLAB],
        "intra_op_threads": 2,
        "shutdown_grace_seconds": 60,
        "batching": {
            DEEPLAB: {"max_batch_size": 2, "max_queue_delay_ms": 0, "max_queue_size": 64, "timeout_ms": 120_000}
        },
    }
    server = start_server(tmp_path, config)
    data = image_bytes("cat_720p.jpg")
    in_flight = 8
    sent = threading.Barrier(in_flight + 1)

    def segment(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            sent.wait()
            return http.post("/segment", content=data, headers={"Content-Type": "image/jpeg"})

    try:
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            futures = [pool.submit(segment, i) for i in range(in_flight)]
            sent.wait()
            # DeepLab at 513 px takes well over 100 ms per image on two cores: once all have arrived, most are queued.
            wait_until_all_arrived(server.url, DEEPLAB, in_flight)
            server.process.send_signal(signal.SIGTERM)
            assert sum(f.done() for f in futures) < in_flight, "the requests should still be in flight"
            time.sleep(0.3)
            refused = False
            try:
                httpx.get(server.url + "/healthz", timeout=5)
            except httpx.TransportError:
                refused = True
            assert refused, "a new connection after SIGTERM should be refused"
            responses = [future.result() for future in futures]
        assert [r.status_code for r in responses] == [200] * in_flight
        assert all(r.headers["content-type"] == "image/png" for r in responses)
        # uvicorn re-raises the signal once it has shut down cleanly, so supervisors see why it stopped.
        assert server.process.wait(60) in (0, -signal.SIGTERM)
        assert "shut down" in server.log_text()
    finally:
        server.stop(signal.SIGKILL)


def _answer_or_what_happened(sock: socket.socket) -> str:
    try:
        line = sock.makefile("rb").readline()
    except ConnectionResetError:
        return "reset"
    return line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed without an answer"


def test_connections_waiting_in_the_accept_backlog_get_503() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(5)]
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_backlog(listener.fileno()) == 5
        answers = [_answer_or_what_happened(client) for client in clients]
        for client in clients:
            client.close()
    assert answers == ["503"] * 5
    assert json.loads(SHUTTING_DOWN_REFUSAL.partition(b"\r\n\r\n")[2])["error"]["code"] == "shutting_down"


def test_connections_made_while_the_server_was_stopped_are_answered_at_sigterm(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"models": [V1_SMALL], "default_model": V1_SMALL, "shutdown_grace_seconds": 2})
    clients: list[socket.socket] = []
    try:
        server.process.send_signal(signal.SIGSTOP)  # nothing is accepted: the connections wait in the backlog
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            clients.append(client)
        server.process.send_signal(signal.SIGTERM)
        server.process.send_signal(signal.SIGCONT)
        answers = [_answer_or_what_happened(client) for client in clients]
        assert server.process.wait(15) in (0, -signal.SIGTERM)
    finally:
        for client in clients:
            client.close()
        server.stop()
    # Served before the listener closed, or told to go elsewhere: never reset.
    assert set(answers) <= {"200", "503"}, answers
