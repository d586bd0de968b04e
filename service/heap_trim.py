"""Give the heap memory that large requests freed back to the system, and keep it in few arenas.

glibc's malloc serves an allocation over its mmap threshold (128 KiB at first) with a mapping of its own,
which goes back to the system when freed; but freeing one raises the threshold to that size (up to 32 MiB),
so the next 19 MB body or 36 MB temporary comes from the heap, and the heap keeps the pages once it is
freed: after an attack of large bodies the server stayed far above its idle memory for good.
`malloc_trim(0)` returns every free page of every arena. It runs only when resident memory has grown since
the last trim: checked every few seconds in the server, after each image in a decoder process. A fixed, low
mmap threshold was the other remedy, and cost every decode fresh pages (docs/reliability.md, "Memory after
an attack").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable

# Growth of resident memory since the last trim that is worth one. In the server: a lot of it at any time, or
# some once memory holds still (trimming under steady load makes the next requests page memory in again);
# in a decoder process, after an image, where a trim costs little beside a large decode.
TRIM_ABOVE_BYTES = 128 * 1024 * 1024
STEADY_TRIM_ABOVE_BYTES = 32 * 1024 * 1024
STEADY_BYTES = 1024 * 1024
DECODER_TRIM_ABOVE_BYTES = 8 * 1024 * 1024
M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def _glibc(function: str) -> Callable[..., int] | None:
    """A function of glibc's malloc, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def limit_arenas() -> None:
    """Cap glibc's malloc arenas at ARENAS, unless MALLOC_ARENA_MAX says otherwise; call before threads start.

    By default each thread that allocates may get an arena of its own (up to 8 per core), and memory freed in
    one is kept there for that thread: after an attack, the instance, codec and helper threads' arenas held
    most of what the server had not given back. Two arenas cost no speed measurably.
    """
    mallopt = _glibc("mallopt")
    if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(M_ARENA_MAX, ARENAS)


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class HeapTrimmer:
    """Trims this process's heap when resident memory grew by `above_bytes` since the last trim, or by
    `steady_above_bytes` where it has moved less than STEADY_BYTES since the previous check."""

    def __init__(self, above_bytes: int, steady_above_bytes: int | None = None) -> None:
        self._trim = _glibc("malloc_trim")
        self._above = above_bytes
        self._steady_above = steady_above_bytes
        self._level = resident_bytes()  # after the last trim, or the lowest since
        self._previous = self._level

    def check(self) -> int:
        """Trim if it is worth it; the resident bytes after."""
        now = resident_bytes()
        grown = now - self._level
        steady = abs(now - self._previous) < STEADY_BYTES
        self._previous = now
        worth_it = grown >= self._above or (self._steady_above is not None and steady and grown >= self._steady_above)
        if self._trim is not None and worth_it:
            self._trim(0)
            now = resident_bytes()
            self._level = self._previous = now
        else:
            self._level = min(self._level, now)
        return now


class PeriodicTrim:
    """A thread that checks every `interval_seconds` until stopped (a trim walks every arena, so not on the loop)."""

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        trimmer = HeapTrimmer(TRIM_ABOVE_BYTES, STEADY_TRIM_ABOVE_BYTES)
        while not self._stopped.wait(self._interval):
            trimmer.check()
