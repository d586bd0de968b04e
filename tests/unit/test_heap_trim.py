"""Giving freed heap memory back: at once after a large growth, after a pause in growth for a smaller one.

Each case runs in a fresh interpreter: in the test process, what earlier tests left in the heap decides
where new blocks land and what a trim can return.
"""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys

import pytest
from support import REPO

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="needs glibc's malloc_trim")

# Frees 100 MiB that free() cannot give back and prints the resident bytes then and after each of two checks.
# 64 KiB blocks come from the heap (under the mmap threshold); a block kept after every 16 leaves holes that
# are not at the heap's top, so free() alone cannot return their pages.
SCENARIO = """
import json, sys
from service.heap_trim import HeapTrimmer, resident_bytes
trimmer = HeapTrimmer(*json.loads(sys.argv[1]))
blocks, pins = [], []
for index in range(1600):
    blocks.append(bytearray(b"x" * (64 * 1024)))
    if index % 16 == 15:
        pins.append(bytearray(b"x" * (64 * 1024)))
grown = resident_bytes()
del blocks
print(json.dumps([grown, resident_bytes(), trimmer.check(), trimmer.check()]))
"""


def _run(above_bytes: int, steady_above_bytes: int | None) -> tuple[int, int, int]:
    """Resident bytes once the blocks are freed, after the first check and after the second."""
    arguments = json.dumps([above_bytes, steady_above_bytes])
    result = subprocess.run(
        [sys.executable, "-c", SCENARIO, arguments], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    grown, held, first, second = json.loads(result.stdout)
    assert held > grown - 32 * MIB, "free() gave the memory back by itself: the test proves nothing here"
    return held, first, second


def test_a_large_growth_is_trimmed_at_the_first_check() -> None:
    held, first, _ = _run(64 * MIB, None)
    assert first < held - 64 * MIB


def test_a_smaller_growth_is_trimmed_only_once_memory_holds_still() -> None:
    held, first, second = _run(1024 * MIB, 32 * MIB)
    assert first > held - 16 * MIB  # it has just moved: no trim yet
    assert second < held - 64 * MIB  # it held still: trimmed


def test_growth_under_the_thresholds_is_left_alone() -> None:
    held, first, second = _run(1024 * MIB, None)
    assert min(first, second) > held - 16 * MIB
