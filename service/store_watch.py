"""While the server runs, check that each loaded model's files on disk still match what was loaded.

A model is loaded once, from files verified against its manifest, and serves from memory afterwards:
deleting or corrupting its files does not touch the requests. It does break the next start, which
would fail that model. The watch says so before that restart: it logs an error once, sets
`mobilenet_model_store_intact` to 0 and shows the problem in the model's /v1/models entry; when the
files match again, all three return to normal.

A pass costs a few stat() calls per model. The manifest, labels and sha256 are checked again only
when a file's size, mtime, ctime or inode changed, so a pass misses only changes that bypass the file
system (media bit rot), which the sha256 check at the next start still catches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .metrics import Metrics
from .registry import ModelState, Registry, Status
from .store import StoreError, Variant, parse_variant, verify_onnx

log = logging.getLogger("mobilenet_serve.store_watch")

# (size, mtime, ctime, inode) of each watched file, None for a missing one.
Fingerprint = tuple[tuple[int, int, int, int] | None, ...]


class StoreWatch:
    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self._registry = registry
        self._metrics = metrics
        self._checked: dict[str, Fingerprint] = {}

    async def run(self, interval_seconds: float) -> None:
        """Check at once, then every `interval_seconds` until cancelled; 0 checks nothing."""
        if interval_seconds <= 0:
            return
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                # The watch only reports; a failure of its own must not end it or touch serving.
                log.exception("checking the model store failed")
            await asyncio.sleep(interval_seconds)

    def check(self) -> None:
        """One pass over the loaded models (blocking: file I/O and hashing)."""
        for state in list(self._registry.states.values()):
            if state.status is Status.LOADED and state.variant is not None:
                self._check_one(state, state.variant)

    def _check_one(self, state: ModelState, variant: Variant) -> None:
        fingerprint = _fingerprint(_watched_files(variant))
        if self._checked.get(variant.name) == fingerprint:
            return
        problem = files_problem(variant)
        self._checked[variant.name] = fingerprint
        if state.store_intact is not None and problem == state.store_problem:
            return
        if problem is not None:
            log.error("model %s: its files no longer match what was loaded (%s); it keeps serving from "
                      "memory, but a restart would fail it", variant.name, problem)  # fmt: skip
        elif state.store_intact is False:
            log.info("model %s: its files match what was loaded again", variant.name)
        state.store_intact, state.store_problem = problem is None, problem
        self._metrics.model_store_intact.labels(variant.name).set(1 if problem is None else 0)


def files_problem(variant: Variant) -> str | None:
    """Why a restart would not load this same model from disk, or None when it would."""
    try:
        on_disk = parse_variant(variant.directory)
        verify_onnx(variant)
    except StoreError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {exc.filename or variant.directory}: {exc.strerror}"
    if on_disk.manifest != variant.manifest:
        return "manifest.json differs from the one loaded"
    if on_disk.labels != variant.labels:
        return f"{variant.manifest['labels']} differs from the one loaded"
    return None


def _watched_files(variant: Variant) -> list[Path]:
    directory = variant.directory
    return [directory / "manifest.json", directory / str(variant.manifest["labels"]), variant.onnx_path]


def _fingerprint(paths: list[Path]) -> Fingerprint:
    stats: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stats.append(None)
            continue
        stats.append((stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return tuple(stats)
