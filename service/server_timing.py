"""The `Server-Timing` header of an inference answer: where its time went, stage by stage.

Browsers show it in their developer tools and scripts read it from the response, so the web page
draws each answer's breakdown from it. Images of one request may run in different batches at once,
so each stage is the longest any of its images spent there; `total` is the request's whole time.
"""

from __future__ import annotations

from collections.abc import Sequence

from .instance import ImageResult

STAGES = {
    "queue": "waiting for an instance",
    "preprocess": "decode, resize and normalise",
    "inference": "ONNX Runtime run of the batch",
}


def server_timing(results: Sequence[ImageResult], total_seconds: float) -> str:
    longest = {stage: max((getattr(r.times, stage) for r in results), default=0.0) for stage in STAGES}
    parts = [f'{stage};dur={longest[stage] * 1000:.2f};desc="{desc}"' for stage, desc in STAGES.items()]
    return ", ".join([*parts, f'total;dur={total_seconds * 1000:.2f};desc="the whole request"'])
