"""Putting a finished entry into the store without a moment in which its name is missing.

A server in poll mode (`model_control_mode: poll`) that looked while a replaced entry was moved aside would
see the model removed, unload it, and load the new one only at its next pass. On Linux, renameat2's
RENAME_EXCHANGE swaps the two directories in one step instead; elsewhere the old entry is moved aside first.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def place(entry: Path, target: Path) -> None:
    """Make `entry` the store's `target`. A replaced entry ends up at `entry`'s path, for the caller to remove."""
    if not target.exists():
        os.replace(entry, target)
    elif not _exchange(entry, target):
        aside = entry.with_name(f"{entry.name}.replaced")
        os.replace(target, aside)
        os.replace(entry, target)
        os.replace(aside, entry)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the C library or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0
