"""Start the decoder processes the settings ask for: one per core for batches, one niced for large images."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .config import Settings
from .cpu_affinity import instance_cpus
from .decoders import Decoder, DecoderPool
from .large_images import NICE, LargeImages
from .metrics import Metrics

log = logging.getLogger("mobilenet_serve.registry")


def start_large_images(settings: Settings, metrics: Metrics) -> LargeImages:
    """The lane for large images, with a niced decoder process of its own where decoding has a budget."""
    decoder = None
    if settings.decode_budget_seconds and settings.large_image_pixels:
        decoder = Decoder(
            settings.max_image_pixels, settings.decode_budget_seconds, None, _count_restart(metrics), nice=NICE
        )
    return LargeImages(decoder, settings.max_image_pixels, settings.large_image_pixels)


def start_decoders(settings: Settings, metrics: Metrics) -> DecoderPool | None:
    """One decoder process per core, or None where images are decoded on the instance threads."""
    if not settings.decode_budget_seconds:
        return None
    cores = settings.intra_op_threads
    try:
        return DecoderPool(
            cores,
            settings.max_image_pixels,
            settings.decode_budget_seconds,
            instance_cpus(cores, settings.pin_instances),
            _count_restart(metrics),
        )
    except OSError as exc:
        log.error("cannot start decoder processes (%s); images are decoded on the instance threads, unbounded", exc)
        return None


def _count_restart(metrics: Metrics) -> Callable[[str, str], None]:
    """The decoders' on_restart: counts mobilenet_decoder_restarts_total by model and reason."""
    return lambda model, reason: metrics.decoder_restarts.labels(model, reason).inc()
