"""Which cores instance threads are pinned to, and a model's instances pinning each thread: in process."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
from support import STORE, V1_SMALL

from service.batcher import Batcher
from service.config import BatchingConfig
from service.cpu_affinity import instance_cpus
from service.cpu_shares import CpuShares
from service.decoders import Decoder
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


def test_a_batch_runs_pinned_to_the_core_it_was_granted() -> None:
    session = ModelSession(STORE / V1_SMALL / "model.onnx", threads=2)
    cpus = [OWN_CPUS[0], OWN_CPUS[-1]]
    shares = CpuShares(2, cpus)
    tensor = np.zeros((3, 128, 128), dtype=np.float32)
    seen: list[set[int]] = []

    class Recording(ModelInstances):
        def _prepare(self, job: ImageJob, decoder: Decoder | None) -> tuple[np.ndarray, tuple[int, int], float]:
            seen.append(os.sched_getaffinity(0))
            return super()._prepare(job, decoder)

    async def one_image(batcher: Batcher) -> None:
        await asyncio.gather(*batcher.submit([ImageJob(tensor, 128, ("logits",))], (128, ("logits",)), 1e12))

    async def scenario() -> None:
        instances = Recording(parse_variant(STORE / V1_SMALL), session, 2, 10**9, Metrics(), shares)
        config = BatchingConfig(instances=2, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
        batcher = Batcher(V1_SMALL, config, instances.run_batch, 2)
        shares.add(V1_SMALL, lambda: batcher.in_flight)
        shares.add("other", lambda: 1)
        held, release = threading.Event(), threading.Event()

        def hold_the_first_core() -> None:
            with shares.turn("other"):
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_first_core)
        holder.start()
        held.wait(10)
        await one_image(batcher)  # beside another model's batch: one core, the second
        release.set()
        holder.join()
        await one_image(batcher)  # alone: every core, pinned to the first granted, the thread's own
        await batcher.drain(5.0)
        instances.close()

    asyncio.run(scenario())
    # Which instance thread takes the second batch is the executor's choice; thread k's own core is core k.
    assert seen[0] == {cpus[1]} and len(seen[1]) == 1 and seen[1] <= set(cpus)
    assert os.sched_getaffinity(0) == set(OWN_CPUS), "pinning an instance must not pin the caller"
