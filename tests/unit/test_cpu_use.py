"""CpuUse: the CPU seconds of the server's process and its children (decoder processes), for model=auto."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from service.cpu_use import CpuUse

# Sleeps first, so that the CPU it then burns comes after the first reading.
CHILD = (
    "import time\ntime.sleep(0.3)\nend = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\ntime.sleep(30)"
)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_it_counts_this_process_and_its_children_and_never_decreases() -> None:
    use = CpuUse()
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        before = use.seconds()
        deadline = time.monotonic() + 20
        while psutil.Process(child.pid).cpu_times().user < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        _burn(0.2)
        during = use.seconds()
        assert during - before >= 0.65
    finally:
        child.kill()
        child.wait(10)
    # The child's seconds leave with it: the count stays where it was and goes on from there.
    after = use.seconds()
    assert after >= during
    _burn(0.1)
    assert use.seconds() >= after + 0.09
