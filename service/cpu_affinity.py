"""Pin each batch to the core the CPU shares granted it, when the process owns exactly that many cores.

A batch that is decoded and run on one core keeps its caches warm instead of being moved between cores,
which serves more images per second (docs/benchmarks.md, "Pinning"). Pinning is only safe when the
process's CPU set is its own: a container limited by a CPU quota still sees every core of the node, and
pinning every replica to the node's first cores would stack them there, so then nothing is pinned.
"""

from __future__ import annotations

import os


def instance_cpus(instances: int, enabled: bool) -> list[int] | None:
    """The CPU of each of `instances` cores in order, or None where pinning does not apply."""
    if not enabled or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus if len(cpus) == instances else None


def pin_this_thread(cpu: int) -> None:
    # On Linux, pid 0 names the calling thread alone.
    os.sched_setaffinity(0, {cpu})
