"""Hand freed memory back to the system: large request bodies must not leave the process at its peak size.

glibc serves an allocation above its mmap threshold with a mapping of its own, returned to the system
when freed, but it raises that threshold to the size of every such block freed, up to 32 MiB, so after
one 19 MB body the next ones come from heaps that keep their pages. A fixed threshold keeps large
buffers mapped on their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("mobilenet_serve.memory")

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks() -> None:
    """Fix glibc's mmap threshold at 1 MiB; a no-op where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("not glibc: the allocator's thresholds are left as they are")
        return
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        log.warning("mallopt(M_MMAP_THRESHOLD) failed; large blocks may stay in the heap after use")
