"""The start-up calibration (calibration.py): every point timed with real sessions, and a slow spell priced out."""

from __future__ import annotations

import time

import numpy as np
from support import STORE, V1_SMALL

from service.calibration import PASSES, CalibrationTarget, calibrate
from service.instance import ModelSession
from service.store import parse_variant

V1_HALF = "mobilenet_v1_0.5_160"
SPELL_SECONDS = 0.3
SPELL_DELAY = 0.05  # seconds


def _target(name: str, slow_until: float | None = None, delay_seconds: float = SPELL_DELAY) -> CalibrationTarget:
    """A real model run as a batch beside others runs it; until `slow_until`, each run is held up as a VM's slow spell
    holds up the process."""
    variant = parse_variant(STORE / name)
    session = ModelSession(variant.onnx_path, threads=1)

    def run(batch: np.ndarray) -> object:
        if slow_until is not None and time.perf_counter() < slow_until:
            time.sleep(delay_seconds)
        return session.run(batch, ("logits",), alone=False)

    return CalibrationTarget(variant, lambda resolution: 2, run)


def test_every_point_is_timed_and_points_that_decode_alike_share_the_decode() -> None:
    small, half = _target(V1_SMALL), _target(V1_HALF)
    assert small.variant.preprocess == half.variant.preprocess  # both TF-slim models: the same preprocessing
    timings = calibrate([small, half], budget_seconds=30.0)
    expected = {(V1_SMALL, r) for r in small.variant.resolutions} | {(V1_HALF, r) for r in half.variant.resolutions}
    assert set(timings) == expected
    for timing in timings.values():
        assert timing.batch_size == 2 and 0 < timing.batch_ms and 0 < timing.alone_ms and 0 < timing.decode_ms
    for resolution in set(small.variant.resolutions) & set(half.variant.resolutions):
        assert timings[(V1_SMALL, resolution)].decode_ms == timings[(V1_HALF, resolution)].decode_ms
    # Four times the pixels, more work: the order the frontier depends on is measured, not noise.
    assert timings[(V1_HALF, 224)].alone_ms > timings[(V1_HALF, 128)].alone_ms


def test_a_slow_spell_at_the_start_does_not_price_the_points_it_falls_on() -> None:
    # The spell covers the first points' samples of the first pass; run back to back, their every sample was in it.
    target = _target(V1_SMALL, slow_until=time.perf_counter() + SPELL_SECONDS)
    assert PASSES >= 3
    timings = calibrate([target], budget_seconds=30.0)
    assert set(timings) == {(V1_SMALL, r) for r in target.variant.resolutions}
    for key, timing in timings.items():
        assert timing.alone_ms < 1000 * SPELL_DELAY, key
        assert timing.batch_ms < 1000 * SPELL_DELAY / 2, key


def test_a_budget_spent_in_the_first_pass_leaves_the_points_it_did_not_reach_untimed() -> None:
    # Each run held up 0.1 s: a point's first sample (two runs to prepare its shapes, two timed) takes 0.4 s, so a
    # budget of 0.6 s reaches two points of four.
    target = _target(V1_SMALL, slow_until=float("inf"), delay_seconds=0.1)
    timings = calibrate([target], budget_seconds=0.6)
    assert set(timings) == {(V1_SMALL, r) for r in target.variant.resolutions[:2]}
    assert calibrate([target], budget_seconds=0.0) == {}
