"""The decoder process (`python -m service.decode_worker FD SHARED MAX_PIXELS RETIRE_RSS`); see decoders.py.

It answers each (spec, resolution) and image on the connection FD with the model's input tensor, written
into the shared file SHARED when it fits, or with the error that refuses the image; it imports only
Pillow, numpy and the preprocessing, so that it starts in a fraction of a second.
"""

from __future__ import annotations

import mmap
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ServiceError
from .heap_trim import DECODER_TRIM_ABOVE_BYTES, HeapTrimmer
from .preprocess import prepare

READY = "ready"


def serve(conn: Connection, shared: mmap.mmap, max_pixels: int, retire_rss_bytes: int) -> None:
    """Answer images until the connection closes, or until this process has grown past `retire_rss_bytes`."""
    trimmer = HeapTrimmer(DECODER_TRIM_ABOVE_BYTES)
    conn.send(READY)
    while True:
        try:
            spec, resolution = conn.recv()
            data = conn.recv_bytes()
        except EOFError:
            return
        reply = _answer(data, spec, resolution, max_pixels, shared)
        retiring = trimmer.check() > retire_rss_bytes
        conn.send((reply[0], retiring, *reply[1:]))
        if retiring:
            return


def _answer(data: bytes, spec: Any, resolution: int, max_pixels: int, shared: mmap.mmap) -> tuple[Any, ...]:
    try:
        image = prepare(data, spec, resolution, max_pixels)
    except ServiceError as error:
        return ("error", error.status, error.message, error.code)
    except Exception as exc:
        return ("error", 400, f"image could not be decoded ({exc})", "bad_image")
    tensor = image.tensor
    if tensor.nbytes > len(shared):
        return ("ok", tensor.shape, image.original_size, tensor.tobytes())
    np.frombuffer(shared, dtype=np.float32, count=tensor.size).reshape(tensor.shape)[...] = tensor
    return ("ok", tensor.shape, image.original_size, None)


def main(argv: list[str]) -> None:
    fd, shared_path, max_pixels, retire_rss_bytes = argv
    with Path(shared_path).open("r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 0)
    serve(Connection(int(fd)), shared, int(max_pixels), int(retire_rss_bytes))


if __name__ == "__main__":
    main(sys.argv[1:])
