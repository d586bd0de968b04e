"""Instance threads pinned to cores of their own, only when the process owns exactly one core per instance."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers_service import STORE, V1_SMALL, ServerProcess, image_bytes, start_server

from service.batching import DynamicBatcher, Prepare
from service.config import BatchingConfig
from service.cpu_affinity import instance_cpus
from service.metrics import Metrics
from service.runtime import ModelSession

OWN_CPUS = sorted(os.sched_getaffinity(0))


def test_instances_get_the_process_cores_only_when_they_match_one_to_one() -> None:
    assert instance_cpus(len(OWN_CPUS), enabled=True) == OWN_CPUS
    assert instance_cpus(len(OWN_CPUS), enabled=False) is None
    # More or fewer instances than owned cores: a CPU quota, not a CPU set, decides the share; leave it to the OS.
    assert instance_cpus(len(OWN_CPUS) + 1, enabled=True) is None
    if len(OWN_CPUS) > 1:
        assert instance_cpus(len(OWN_CPUS) - 1, enabled=True) is None


def test_batcher_runs_each_instance_on_its_own_core() -> None:
    session = ModelSession(STORE / V1_SMALL / "model.onnx", threads=2, instances=2)
    cpus = [OWN_CPUS[0], OWN_CPUS[-1]]
    tensor = np.zeros((3, 128, 128), dtype=np.float32)
    seen: list[set[int]] = []

    def recording() -> tuple[None, np.ndarray]:
        seen.append(os.sched_getaffinity(0))
        time.sleep(0.2)  # keeps the first instance busy, so the second image starts the second thread
        return None, tensor

    async def scenario() -> None:
        config = BatchingConfig(instances=2, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
        batcher = DynamicBatcher(V1_SMALL, session, config, Metrics(), cpus)
        prepares: list[Prepare] = [recording, recording]
        await asyncio.gather(*batcher.submit(prepares, (128, ("logits",)), time.perf_counter() + 60))
        await batcher.drain(5.0)

    asyncio.run(scenario())
    assert sorted(seen, key=min) == [{cpus[0]}, {cpus[1]}]
    assert os.sched_getaffinity(0) == set(OWN_CPUS), "pinning an instance must not pin the caller"


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
    server = start_server(tmp_path, config)
    try:
        _serve_concurrently(server, 4 * len(OWN_CPUS))  # busy instances make the pool start all its threads
        pinned = _single_cpu_threads(server.process.pid)
    finally:
        server.stop(signal.SIGTERM)
    if pin:
        # One thread per instance, each on a different core of the process's own set.
        assert len(pinned) >= 2 and len(pinned) == len(set(pinned)) and set(pinned) <= set(OWN_CPUS), pinned
    else:
        assert pinned == []
