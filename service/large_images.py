"""Large images, decoded before they queue: one at a time, at a lower CPU priority than everything else.

An image whose decode produces more than `large_image_pixels` (after a JPEG's DCT downscaling) costs
tens to hundreds of milliseconds to decode. Decoded inside a batch it
would hold up every image of that batch, and a decode cannot be interrupted, so even on a core of its
own it would halve the cores left to small images for that long. Here it is decoded by a process of its
own, niced: it takes the CPU the rest of the server leaves (all of it when idle, about a tenth of a core
under full load), the operating system interrupts it whenever a small image's work is ready, and its
budget counts CPU time. The tensor it yields joins the model's queue like any other image.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .decoders import Decoder
from .errors import ServiceError
from .preprocess import PreprocessSpec, decoded_pixels, prepare

# Large images waiting here at most; each holds its encoded body, so the bound is also one on memory.
MAX_WAITING = 16
# Nice 10 weighs 110 against 1024 at nice 0 in Linux's scheduler: about a tenth of a contended core.
NICE = 10

Prepared = tuple[np.ndarray, tuple[int, int]]  # the model's input tensor, and the upright size of the original


class LargeImages:
    """With `decoder` (a niced Decoder), images are decoded there; without, on a niced thread, unbounded."""

    def __init__(self, decoder: Decoder | None, max_pixels: int, threshold: int) -> None:
        self._decoder = decoder
        self._max_pixels = max_pixels
        self._threshold = threshold
        self._in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large-images", initializer=_nice)

    def is_large(self, image: Image.Image, spec: PreprocessSpec, resolution: int) -> bool:
        """Whether an opened (not decoded) image is to be decoded here; never when the threshold is 0."""
        return bool(self._threshold) and decoded_pixels(image, spec, resolution) > self._threshold

    async def prepare(
        self, data: bytes, spec: PreprocessSpec, resolution: int, model: str, deadline: float
    ) -> Prepared:
        """The image as `model`'s input tensor, decoded in turn before the request's deadline."""
        if self._in_flight >= MAX_WAITING:
            raise ServiceError(
                503,
                f"{MAX_WAITING} large images are being decoded; retry shortly",
                code="busy",
                headers={"Retry-After": "1"},
            )
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        try:
            decoding = loop.run_in_executor(self._executor, self._decode, data, spec, resolution, model, deadline)
            return await asyncio.wait_for(decoding, max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            raise _too_late() from None
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        """Kill the decoder (a thread waiting on it gets 503 at once), then wait for the thread."""
        if self._decoder is not None:
            self._decoder.close()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _decode(self, data: bytes, spec: PreprocessSpec, resolution: int, model: str, deadline: float) -> Prepared:
        if time.perf_counter() > deadline:
            raise _too_late()
        if self._decoder is not None:
            return self._decoder.prepare(data, spec, resolution, model)
        try:
            image = prepare(data, spec, resolution, self._max_pixels)
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(400, f"image could not be decoded ({exc})", code="bad_image") from exc
        return image.tensor, image.original_size


def _nice() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)  # on Linux, this thread alone


def _too_late() -> ServiceError:
    return ServiceError(504, "the request's deadline passed while its large image waited to be decoded")
