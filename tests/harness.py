"""The service as a subprocess on a free loopback port: how the tests and the benchmarks in bench/ run it.

Module-level imports are the standard library and httpx only: bench/compare_peers.py imports this from the
peers' venv (bench/peers/requirements.txt), which promises nothing else of the product's dependencies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
STORE = REPO / "model_store"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on now; the OS hands out a different one each time."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    # The settings written to its YAML file, so that a test can read the limits it was started with.
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_once(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds `text`, or as it is after `timeout` seconds: a request's access line is written
        after its response has gone out, so a client can read the answer before the line is there."""
        deadline = time.monotonic() + timeout
        log = self.log_text()
        while text not in log and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.log_text()
        return log

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait up to `timeout` seconds for a clean exit, then kill; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def start_server(
    workdir: Path,
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 90.0,
    store: Path | None = STORE,
    repo: Path = REPO,
    port: int | None = None,
) -> ServerProcess:
    """Run `python -m service.cli` from `repo` with `config` as its YAML file, logging to workdir/server.log.

    The port is a free one unless given; gRPC is off unless `config` sets `grpc_port`. `store=None` leaves the
    store to the settings (the checkout's own model_store/ by default). MOBILENET_* variables of this process are
    not passed on, so only `config` and `env` configure the server.
    """
    # Imported here: bench/compare_peers.py imports this module only for free_port(), in a venv without PyYAML.
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    # gRPC off unless asked for: servers started one after another must not all claim port 8001. (A checkout
    # from before gRPC, as bench/config_ab.py runs, refuses the key.)
    if "grpc_port" in (repo / "service" / "config.py").read_text(encoding="utf-8"):
        config = {"grpc_port": 0, **config}
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = port or free_port()
    log_path = workdir / "server.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    child_env.update(env or {})
    command = [sys.executable, "-m", "service.cli", "--port", str(port), "--config", str(config_path)]
    if store is not None:
        command += ["--store", str(store)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=repo, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://{LOOPBACK}:{port}", log_path, config)
    if wait_ready:
        wait_until_ready(server, timeout)
    return server


def wait_until_ready(server: ServerProcess, timeout: float) -> None:
    """Poll /readyz until it answers 200; kill the server and raise with its log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log_text()}")


@contextmanager
def running_server(
    workdir: Path, config: dict[str, Any], store: Path | None = STORE, timeout: float = 90.0
) -> Iterator[ServerProcess]:
    """A ready server for the length of the block, stopped with SIGTERM as an orchestrator stops it."""
    server = start_server(workdir, config, timeout=timeout, store=store)
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM)
