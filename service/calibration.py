"""What each ImageNet classifier costs per image at each resolution on this host, timed at start-up.

Hosts differ (int8 runs 35% and more slower without VNNI), so a trade-off table measured elsewhere says
nothing of latency here. Before the server says it is ready, each point is timed once, in a budget of a
few seconds for all of them: one image run alone and a batch of the model's batch size, on the session a
batch uses beside others (one core), and decoding a JPEG photo's size of pixels into that resolution. A
point the budget did not reach has no timing.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .preprocess import prepare
from .store import Variant

log = logging.getLogger("mobilenet_serve.calibration")

RUNS = 3
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
    timings: dict[tuple[str, int], Timing] = {}
    skipped = 0
    for target in targets:
        for resolution in target.variant.resolutions:
            if time.perf_counter() - started > budget_seconds:
                skipped += 1
                continue
            timings[(target.variant.name, resolution)] = _time(target, resolution, photo)
    seconds = time.perf_counter() - started
    log.info("calibrated %d trade-off points in %.1f s%s", len(timings), seconds,
             f"; {skipped} left untimed (calibration_seconds)" if skipped else "")  # fmt: skip
    return timings


def _time(target: CalibrationTarget, resolution: int, photo: bytes) -> Timing:
    variant = target.variant
    size = target.batch_limit(resolution)
    one = np.zeros((1, 3, resolution, resolution), dtype=np.float32)
    batch = np.zeros((size, 3, resolution, resolution), dtype=np.float32)
    target.run(one)  # the first run at a new shape prepares it
    if size > 1:
        target.run(batch)
    alone = _fastest_ms(lambda: target.run(one))
    per_image = _fastest_ms(lambda: target.run(batch)) / size
    decode = _fastest_ms(lambda: prepare(photo, variant.preprocess, resolution, PHOTO_SIZE[0] * PHOTO_SIZE[1]))
    return Timing(round(alone, 3), round(per_image, 3), size, round(decode, 3))


def _fastest_ms(work: Callable[[], object]) -> float:
    durations = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        durations.append(time.perf_counter() - started)
    # The fastest run: what the work costs; slower ones measured interruptions by other processes too.
    return 1000.0 * min(durations)


def _photo() -> bytes:
    """A JPEG with a photo's detail (a smooth gradient with noise), made here: no file is needed."""
    width, height = PHOTO_SIZE
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = np.random.default_rng(0).normal(0, 24, (height, width, 3)).astype(np.float32)
    pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
