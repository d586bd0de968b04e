"""Image decoding in worker processes that can be killed: Pillow cannot be interrupted, a process can.

There is one decoder process per core the models share, pinned to that core, and a batch granted
core k by the CPU shares (cpu_shares.py) decodes in decoder k. The instance thread sends the
encoded image and waits for the model's input tensor, which the decoder writes into memory the two
share; when the decode budget runs out first, the thread kills the process, starts another and fails
only that image, so the core is free again at once. A decoder whose memory grew past its limit on a
large image exits after answering, which gives the memory back to the system.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from .cpu_use import cpu_seconds
from .decode_worker import READY
from .errors import SHUTTING_DOWN, ServiceError
from .preprocess import PreprocessSpec

log = logging.getLogger("mobilenet_serve.decoders")

RETIRE_RSS_BYTES = 512 * 1024 * 1024
# The largest tensor that travels through shared memory (float32 [3, 1024, 1024]); a larger one is sent whole.
SHARED_BYTES = 3 * 1024 * 1024 * 4
# How long a new decoder process may take to import Pillow and numpy and say it is ready.
START_SECONDS = 30.0
# The directory that holds the `service` package, for a process started from any working directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

# Called with the model and the reason a decoder was replaced: "budget", "crashed" or "memory".
OnRestart = Callable[[str, str], None]
Prepared = tuple[np.ndarray, tuple[int, int]]  # the normalised tensor, and the upright size of the original


class DecoderPool:
    """The decoder processes, one per core (or per instance index when nothing is pinned)."""

    def __init__(
        self,
        count: int,
        max_pixels: int,
        budget_seconds: float,
        cpus: Sequence[int] | None,
        on_restart: OnRestart,
        retire_rss_bytes: int = RETIRE_RSS_BYTES,
    ) -> None:
        self._decoders = [
            Decoder(max_pixels, budget_seconds, cpus[k % len(cpus)] if cpus else None, on_restart, retire_rss_bytes)
            for k in range(count)
        ]

    def decoder(self, index: int) -> Decoder:
        return self._decoders[index % len(self._decoders)]

    def close(self) -> None:
        for decoder in self._decoders:
            decoder.close()


class Decoder:
    """One decoder process; the instance threads that share it take turns."""

    def __init__(
        self,
        max_pixels: int,
        budget_seconds: float,
        cpu: int | None,
        on_restart: OnRestart,
        retire_rss_bytes: int = RETIRE_RSS_BYTES,
        nice: int = 0,
    ) -> None:
        self._limits = (max_pixels, retire_rss_bytes)
        self._budget = budget_seconds
        self._cpu = cpu
        # A niced decoder waits for the cores others leave, so its budget counts the CPU time it used instead.
        self._nice = nice
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._closed = False
        self._shared_file = _shared_file()
        self._shared_file.truncate(SHARED_BYTES)
        self._shared = mmap.mmap(self._shared_file.fileno(), SHARED_BYTES)
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._start()

    def prepare(self, data: bytes, spec: PreprocessSpec, resolution: int, model: str) -> Prepared:
        """The image as the model's input tensor, or the ServiceError that refuses it."""
        with self._lock:  # held until the shared tensor is copied out
            tensor, size = self._decode(data, spec, resolution, model)
            return tensor.copy(), size

    def close(self) -> None:
        """Kill the process; an instance thread waiting on it gets 503 at once (called from another thread)."""
        self._closed = True
        self._stop()
        self._shared_file.close()  # removes the file; the mapping stays valid while anything reads it

    def _decode(self, data: bytes, spec: PreprocessSpec, resolution: int, model: str) -> tuple[np.ndarray, Any]:
        if self._process is None or self._process.poll() is not None:
            self._restart(model, "crashed")  # died between images: not this image's doing
        assert self._conn is not None and self._process is not None
        try:
            if not self._ready:
                self._ready = self._conn.poll(START_SECONDS) and self._conn.recv() == READY
            used_before = cpu_seconds(self._process.pid) if self._nice else 0.0
            self._conn.send((spec, resolution))
            self._conn.send_bytes(data)
            reply = self._conn.recv() if self._answered(used_before) else None
        except (EOFError, OSError):
            self._restart(model, "crashed")
            raise ServiceError(
                400, "the image could not be decoded: the decoder died on it", code="bad_image"
            ) from None
        if reply is None:
            self._restart(model, "budget")
            raise ServiceError(
                400,
                f"decoding the image took longer than its budget of {self._budget:g} s (decode_budget_seconds)",
                code="image_too_costly",
            )
        kind, retiring, *rest = reply
        if retiring:
            self._restart(model, "memory")  # after reading the answer: the shared memory outlives the process
        if kind == "error":
            status, message, code = rest
            raise ServiceError(status, message, code=code)
        shape, size, whole = rest
        if whole is not None:
            return np.frombuffer(whole, dtype=np.float32).reshape(shape), size
        return np.frombuffer(self._shared, dtype=np.float32, count=int(np.prod(shape))).reshape(shape), size

    def _answered(self, used_before: float) -> bool:
        """Whether the decoder answered within its budget: of wall time, or of CPU time when niced."""
        wait = self._budget
        while not self._conn.poll(wait):  # type: ignore[union-attr]
            if not self._nice:
                return False
            assert self._process is not None
            wait = self._budget - (cpu_seconds(self._process.pid) - used_before)
            if wait <= 0:
                return False
        return True

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "service.decode_worker", str(theirs.fileno()), self._shared_file.name]
        command += [str(limit) for limit in self._limits]
        self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=environment)
        theirs.close()
        self._conn, self._ready = Connection(ours.detach()), False
        if self._cpu is not None:
            os.sched_setaffinity(self._process.pid, {self._cpu})
        if self._nice:
            os.setpriority(os.PRIO_PROCESS, self._process.pid, self._nice)

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
        if self._conn is not None:
            self._conn.close()

    def _restart(self, model: str, reason: str) -> None:
        if self._closed:
            raise ServiceError(503, SHUTTING_DOWN, code="shutting_down")
        log.warning("model %s: decoder %s replaced (%s)", model, self._process.pid if self._process else "-", reason)
        self._stop()
        self._on_restart(model, reason)
        self._start()


def _shared_file() -> Any:
    """A file in memory (/dev/shm) where there is one, else in the temporary directory (an emptyDir in the chart)."""
    try:
        return tempfile.NamedTemporaryFile(prefix="mobilenet-decoder-", dir="/dev/shm")  # noqa: SIM115
    except OSError:
        return tempfile.NamedTemporaryFile(prefix="mobilenet-decoder-")  # noqa: SIM115
