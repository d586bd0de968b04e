"""Decoder processes: the same tensors as decoding in process, killed and replaced past their budget."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from hostile_images import slow_png
from support import IMAGES, PHOTOS, STORE, TV_INT8, V1_SMALL

from service.decoders import Decoder, DecoderPool
from service.errors import ServiceError
from service.preprocess import prepare
from service.store import parse_variant

SPECS = [parse_variant(STORE / name).preprocess for name in (V1_SMALL, TV_INT8)]
MAX_PIXELS = 40_000_000


@pytest.fixture()
def restarts() -> list[tuple[str, str]]:
    return []


def _pool(restarts: list[tuple[str, str]], budget: float = 5.0, **options: int) -> DecoderPool:
    return DecoderPool(1, MAX_PIXELS, budget, None, lambda model, reason: restarts.append((model, reason)), **options)


@pytest.fixture()
def pool(restarts: list[tuple[str, str]]) -> Iterator[DecoderPool]:
    decoders = _pool(restarts)
    yield decoders
    decoders.close()


@pytest.mark.parametrize("spec", SPECS, ids=["tf-slim", "torchvision"])
def test_the_pixels_equal_decoding_in_process(pool: DecoderPool, spec: object) -> None:
    for name in PHOTOS:
        data = (IMAGES / name).read_bytes()
        tensor, size = pool.decoder(0).prepare(data, spec, 224, "m")  # type: ignore[arg-type]
        expected = prepare(data, spec, 224, MAX_PIXELS)  # type: ignore[arg-type]
        assert np.array_equal(tensor, expected.tensor), name
        assert size == expected.original_size


def test_a_refusal_in_the_decoder_is_the_same_error(pool: DecoderPool, restarts: list[tuple[str, str]]) -> None:
    with pytest.raises(ServiceError) as caught:
        pool.decoder(0).prepare(b"not an image at all", SPECS[0], 128, "m")
    assert caught.value.status == 400 and caught.value.code == "bad_image"
    assert restarts == []


def test_an_image_over_the_budget_kills_the_decoder_and_the_next_image_is_served(
    restarts: list[tuple[str, str]],
) -> None:
    decoders = _pool(restarts, budget=0.05)
    try:
        with pytest.raises(ServiceError) as caught:
            decoders.decoder(0).prepare(slow_png(), SPECS[0], 128, "m")
        assert caught.value.status == 400 and caught.value.code == "image_too_costly"
        assert restarts == [("m", "budget")]
        pixels, _ = decoders.decoder(0).prepare((IMAGES / "cat.png").read_bytes(), SPECS[0], 128, "m")
        assert pixels.shape == (3, 128, 128)
    finally:
        decoders.close()


def test_a_decoder_that_died_between_images_is_replaced_without_failing_the_next(
    pool: DecoderPool, restarts: list[tuple[str, str]]
) -> None:
    decoder = pool.decoder(0)
    process = decoder._process
    assert process is not None and process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(5)
    pixels, _ = decoder.prepare((IMAGES / "cat.png").read_bytes(), SPECS[0], 128, "m")
    assert pixels.shape == (3, 128, 128)
    assert restarts == [("m", "crashed")]


def test_a_decoder_over_its_memory_limit_retires_after_answering(restarts: list[tuple[str, str]]) -> None:
    decoders = _pool(restarts, retire_rss_bytes=1)
    try:
        for _ in range(2):
            pixels, _ = decoders.decoder(0).prepare((IMAGES / "cat.png").read_bytes(), SPECS[0], 128, "m")
            assert pixels.shape == (3, 128, 128)
        assert restarts == [("m", "memory"), ("m", "memory")]
    finally:
        decoders.close()


def test_a_niced_decoder_runs_at_its_priority_and_counts_cpu_time_against_its_budget(
    restarts: list[tuple[str, str]],
) -> None:
    # slow_png takes about half a second of CPU to decode: past a budget of 0.1 s, inside one of 30 s.
    for budget, refused in ((0.1, True), (30.0, False)):
        decoder = Decoder(MAX_PIXELS, budget, None, lambda model, reason: restarts.append((model, reason)), nice=10)
        try:
            assert decoder._process is not None and os.getpriority(os.PRIO_PROCESS, decoder._process.pid) == 10
            if refused:
                with pytest.raises(ServiceError) as error:
                    decoder.prepare(slow_png(), SPECS[0], 128, "m")
                assert error.value.code == "image_too_costly"
            else:
                tensor, size = decoder.prepare(slow_png(), SPECS[0], 128, "m")
                assert tensor.shape == (3, 128, 128) and size == (6000, 6000)
        finally:
            decoder.close()
    assert restarts == [("m", "budget")]
