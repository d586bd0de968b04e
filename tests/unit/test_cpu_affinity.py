"""Which cores instance threads are pinned to, and a model's instances pinning each thread: in process."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
from support import STORE, V1_SMALL

from service.batcher import Batcher
from service.config import BatchingConfig
from service.cpu_affinity import instance_cpus
from service.instance import ImageJob, ModelInstances, ModelSession
from service.metrics import Metrics
from service.store import parse_variant

OWN_CPUS = sorted(os.sched_getaffinity(0))


def test_instances_get_the_process_cores_only_when_they_match_one_to_one() -> None:
    assert instance_cpus(len(OWN_CPUS), enabled=True) == OWN_CPUS
    assert instance_cpus(len(OWN_CPUS), enabled=False) is None
    # More or fewer instances than owned cores: a CPU quota, not a CPU set, decides the share; leave it to the OS.
    assert instance_cpus(len(OWN_CPUS) + 1, enabled=True) is None
    if len(OWN_CPUS) > 1:
        assert instance_cpus(len(OWN_CPUS) - 1, enabled=True) is None


def test_each_instance_runs_on_its_own_core() -> None:
    session = ModelSession(STORE / V1_SMALL / "model.onnx", threads=2, instances=2)
    cpus = [OWN_CPUS[0], OWN_CPUS[-1]]
    tensor = np.zeros((3, 128, 128), dtype=np.float32)
    seen: list[set[int]] = []

    class Recording(ModelInstances):
        def _prepare(self, job: ImageJob) -> tuple[np.ndarray, tuple[int, int]]:
            seen.append(os.sched_getaffinity(0))
            time.sleep(0.2)  # keeps the first instance busy, so the second image starts the second thread
            return super()._prepare(job)

    async def scenario() -> None:
        instances = Recording(parse_variant(STORE / V1_SMALL), session, 2, 10**9, Metrics(), cpus)
        config = BatchingConfig(instances=2, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
        batcher = Batcher(V1_SMALL, config, instances.run_batch, 2)
        jobs = [ImageJob(tensor, 128, ("logits",))] * 2
        await asyncio.gather(*batcher.submit(jobs, (128, ("logits",)), time.perf_counter() + 60))
        await batcher.drain(5.0)
        instances.close()

    asyncio.run(scenario())
    assert sorted(seen, key=min) == [{cpus[0]}, {cpus[1]}]
    assert os.sched_getaffinity(0) == set(OWN_CPUS), "pinning an instance must not pin the caller"
