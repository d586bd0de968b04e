"""The CPU time this server has used: its own threads and its decoder processes, for model=auto's view of the load.

The queue wait says when the cores are overloaded; the CPU time says how close to it they run before a
queue forms, which is what deciding to climb to a costlier point needs (auto_ceiling.Ceiling).
"""

from __future__ import annotations

import math
import os
import time

import psutil

# Decoder processes come and go (a crashed one is replaced): the list is read again this often.
LIST_SECONDS = 2.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (fields 14 and 15 of /proc/PID/stat, in clock ticks); 0 once
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuUse:
    def __init__(self) -> None:
        self._me = psutil.Process()
        self._children: list[int] = []
        self._listed_at = -math.inf
        self._last = 0.0
        self._total = 0.0

    def seconds(self) -> float:
        """CPU seconds used so far; it never decreases, though a decoder process that exits takes its share along."""
        now = time.monotonic()
        if now - self._listed_at > LIST_SECONDS:
            self._children = [child.pid for child in self._me.children(recursive=True)]
            self._listed_at = now
        used = time.process_time() + sum(cpu_seconds(pid) for pid in self._children)
        self._total += max(0.0, used - self._last)
        self._last = used
        return self._total
