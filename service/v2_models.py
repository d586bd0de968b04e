"""What each variant offers over the Open Inference Protocol: its inputs, outputs, metadata and Triton config.

The routes in `v2_protocol.py` answer metadata and configuration requests from these, and check an
inference request's inputs and outputs against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import v2_codec as codec
from .api import Context
from .store import Variant

MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
IMAGE = "image"
IMAGE_BYTES = "image_bytes"
PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class OutputSpec:
    shape: tuple[int, ...]  # without the batch dimension; -1 where it varies with the resolution
    sources: tuple[str, ...]  # the ONNX Runtime outputs it is computed from


def image_size(variant: Variant) -> int:
    """The input's height and width as metadata states it: -1 where the variant takes several."""
    return variant.resolutions[0] if len(variant.resolutions) == 1 else -1


def output_specs(variant: Variant) -> dict[str, OutputSpec]:
    size = image_size(variant)
    classes = len(variant.labels)
    specs: dict[str, OutputSpec] = {}
    if "classify" in variant.tasks:
        specs["logits"] = OutputSpec((classes,), ("logits",))
        specs[PROBABILITIES] = OutputSpec((classes,), ("logits",))
    if "embed" in variant.tasks:
        specs["embedding"] = OutputSpec((variant.embedding_dim or -1,), ("embedding",))
    if "backbone" in variant.tasks:
        for stride, channels in sorted((variant.feature_strides or {}).items(), key=lambda kv: int(kv[0])):
            specs[f"features_s{stride}"] = OutputSpec((channels, -1, -1), (f"features_s{stride}",))
    if "segment" in variant.tasks:
        specs["seg_logits"] = OutputSpec((classes, size, size), ("seg_logits",))
    return specs


def default_outputs(variant: Variant) -> tuple[str, ...]:
    """What a request that names no outputs gets: the class scores, or the segmentation scores."""
    return ("logits",) if "classify" in variant.tasks else ("seg_logits",)


def model_metadata(variant: Variant) -> codec.ModelMetadata:
    size = image_size(variant)
    inputs = [
        codec.TensorMetadata(name=IMAGE, datatype="FP32", shape=[-1, 3, size, size]),
        # Triton's shape for one string per batch item (dims [1]); [N] is accepted as well.
        codec.TensorMetadata(name=IMAGE_BYTES, datatype="BYTES", shape=[-1, 1]),
    ]
    outputs = [
        codec.TensorMetadata(name=name, datatype="FP32", shape=[-1, *spec.shape])
        for name, spec in output_specs(variant).items()
    ]
    return codec.ModelMetadata(
        name=variant.name, versions=[MODEL_VERSION], platform=PLATFORM, inputs=inputs, outputs=outputs
    )


def model_config(ctx: Context, variant: Variant) -> dict[str, Any]:
    """Triton's model configuration, as much of it as clients such as perf_analyzer read."""
    size = image_size(variant)
    batching = ctx.settings.batching_for(variant.name)
    return {
        "name": variant.name,
        "platform": PLATFORM,
        "max_batch_size": ctx.settings.max_images_per_request,
        # Both inputs are optional: a request sends exactly one of them.
        "input": [
            {"name": IMAGE, "data_type": "TYPE_FP32", "dims": [3, size, size], "optional": True},
            {"name": IMAGE_BYTES, "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}, "optional": True},
        ],
        "output": [
            {"name": name, "data_type": "TYPE_FP32", "dims": list(spec.shape)}
            for name, spec in output_specs(variant).items()
        ],
        "dynamic_batching": {
            "preferred_batch_size": [batching.max_batch_size],
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {
                "max_queue_size": batching.max_queue_size,
                "default_timeout_microseconds": int(batching.timeout_ms * 1000),
            },
        },
    }
