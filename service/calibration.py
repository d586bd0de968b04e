"""What each ImageNet classifier costs per image at each resolution on this host, timed at start-up.

Hosts differ (int8 runs 35% and more slower without VNNI), so a trade-off table measured elsewhere says
nothing of latency here. Before the server says it is ready, each point is timed in a budget of a few
seconds for all of them: one image run alone and a batch of the model's batch size, on the session a
batch uses beside others (one core), and decoding a JPEG photo's size of pixels into that resolution. A
point the budget did not reach has no timing.

Each timing is the fastest of PASSES samples, and every pass takes one sample of every point in turn: a
VM's slow spells last a second or more, and timing each point's runs back to back put whole points in
them, so that which points made model=auto's frontier changed from one start-up to the next. Decoding
depends only on the preprocessing and the resolution, so points that share both share its samples.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .preprocess import PreprocessSpec, prepare
from .store import Variant

log = logging.getLogger("mobilenet_serve.calibration")

PASSES = 5
# A 640x480 photo: the size of the benchmark images and of most uploads.
PHOTO_SIZE = (640, 480)


@dataclass(frozen=True)
class CalibrationTarget:
    variant: Variant
    batch_limit: Callable[[int], int]  # images per batch at a resolution
    run: Callable[[np.ndarray], object]  # runs a float32 [N, 3, S, S] batch as a batch beside others does


@dataclass(frozen=True)
class Timing:
    alone_ms: float  # one image, run alone, on one core
    batch_ms: float  # per image, in a batch of `batch_size`
    batch_size: int
    decode_ms: float  # decoding a 640x480 JPEG into this resolution's tensor

    @property
    def latency_ms(self) -> float:
        """What one image costs on its own: decoding and running it alone."""
        return self.decode_ms + self.alone_ms


def calibrate(targets: Iterable[CalibrationTarget], budget_seconds: float) -> dict[tuple[str, int], Timing]:
    """A timing per (model, resolution) of `targets`, until `budget_seconds` are spent."""
    started = time.perf_counter()
    photo = _photo()
    inputs: dict[tuple[int, int], np.ndarray] = {}  # shared by the points: (images, resolution) -> zeros
    points = [_Point(target, resolution, inputs) for target in targets for resolution in target.variant.resolutions]
    decodes: dict[tuple[PreprocessSpec, int], list[float]] = {}
    for _ in range(PASSES):
        sampled: set[tuple[PreprocessSpec, int]] = set()
        for point in points:
            if time.perf_counter() - started > budget_seconds:
                break
            point.sample()
            if point.decode_key not in sampled:
                sampled.add(point.decode_key)
                decodes.setdefault(point.decode_key, []).append(point.time_decode(photo))
    timings = {point.key: point.timing(min(decodes[point.decode_key])) for point in points if point.timed}
    seconds = time.perf_counter() - started
    skipped = len(points) - len(timings)
    log.info("calibrated %d trade-off points in %.1f s%s", len(timings), seconds,
             f"; {skipped} left untimed (calibration_seconds)" if skipped else "")  # fmt: skip
    return timings


class _Point:
    """One (model, resolution) being timed: its samples so far."""

    def __init__(self, target: CalibrationTarget, resolution: int, inputs: dict[tuple[int, int], np.ndarray]) -> None:
        self._target = target
        self.key = (target.variant.name, resolution)
        self.decode_key = (target.variant.preprocess, resolution)
        self._size = target.batch_limit(resolution)
        # Allocated once and run many times: a fresh array would page its memory in during the timed run.
        for images in {1, self._size}:
            inputs.setdefault((images, resolution), np.zeros((images, 3, resolution, resolution), dtype=np.float32))
        self._one, self._batch = inputs[(1, resolution)], inputs[(self._size, resolution)]
        self._alone: list[float] = []
        self._batched: list[float] = []

    @property
    def timed(self) -> bool:
        return bool(self._alone)

    def sample(self) -> None:
        if not self.timed:  # the first run at a new shape prepares it
            self._target.run(self._one)
            if self._size > 1:
                self._target.run(self._batch)
        self._alone.append(_ms(lambda: self._target.run(self._one)))
        self._batched.append(_ms(lambda: self._target.run(self._batch)) / self._size)

    def time_decode(self, photo: bytes) -> float:
        spec, resolution = self.decode_key
        return _ms(lambda: prepare(photo, spec, resolution, PHOTO_SIZE[0] * PHOTO_SIZE[1]))

    def timing(self, decode_ms: float) -> Timing:
        # The fastest sample: what the work costs; slower ones measured interruptions by other processes too.
        return Timing(round(min(self._alone), 3), round(min(self._batched), 3), self._size, round(decode_ms, 3))


def _ms(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return 1000.0 * (time.perf_counter() - started)


def _photo() -> bytes:
    """A JPEG with a photo's detail (a smooth gradient with noise), made here: no file is needed."""
    width, height = PHOTO_SIZE
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = np.random.default_rng(0).normal(0, 24, (height, width, 3)).astype(np.float32)
    pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
