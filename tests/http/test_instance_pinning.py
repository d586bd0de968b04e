"""A real server pins its instance threads to cores of their own, only when configured to."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import ServerProcess, running_server
from support import V1_SMALL, image_bytes

OWN_CPUS = sorted(os.sched_getaffinity(0))


def _single_cpu_threads(pid: int) -> list[int]:
    """The CPU of each of the process's threads that may run on one CPU only."""
    pinned = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        allowed = next(
            line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list")
        )
        if allowed.isdigit():
            pinned.append(int(allowed))
    return pinned


def _serve_concurrently(server: ServerProcess, requests: int) -> None:
    def one(_: int) -> int:
        with server.client() as http:
            response = http.post("/classify", content=image_bytes("owl.jpg"), headers={"Content-Type": "image/jpeg"})
            return response.status_code

    with ThreadPoolExecutor(max_workers=requests) as pool:
        assert set(pool.map(one, range(requests))) == {200}


@pytest.mark.parametrize("pin", [True, False])
def test_server_pins_instance_threads_as_configured(tmp_path: Path, pin: bool) -> None:
    if len(OWN_CPUS) < 2:
        pytest.skip("with one core every thread runs on it: pinning cannot be told apart")
    config = {
        "models": [V1_SMALL],
        "intra_op_threads": len(OWN_CPUS),  # instances default to one per thread: one per owned core
        "pin_instances": pin,
        "default_batching": {"max_batch_size": 1},
    }
    with running_server(tmp_path, config) as server:
        _serve_concurrently(server, 4 * len(OWN_CPUS))  # busy instances make the pool start all its threads
        pinned = _single_cpu_threads(server.process.pid)
    if pin:
        # One thread per instance, each on a different core of the process's own set.
        assert len(pinned) >= 2 and len(pinned) == len(set(pinned)) and set(pinned) <= set(OWN_CPUS), pinned
    else:
        assert pinned == []
