"""What each variant offers over the Open Inference Protocol: its inputs, outputs, metadata and Triton config."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..store import Variant
from ..tasks import image_size, v2_outputs
from .schemas import ModelMetadata, TensorMetadata

MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
IMAGE = "image"
IMAGE_BYTES = "image_bytes"


def default_outputs(variant: Variant) -> tuple[str, ...]:
    """What a request that names no outputs gets: the class scores, or else every output the variant offers
    (DeepLab's segmentation scores, a face detector's regressors and scores, the person probability)."""
    return ("logits",) if "classify" in variant.tasks else tuple(v2_outputs(variant))


def model_metadata(variant: Variant) -> ModelMetadata:
    size = image_size(variant)
    inputs = [
        TensorMetadata(name=IMAGE, datatype="FP32", shape=[-1, 3, size, size]),
        # Triton's shape for one string per batch item (dims [1]); [N] is accepted as well.
        TensorMetadata(name=IMAGE_BYTES, datatype="BYTES", shape=[-1, 1]),
    ]
    outputs = [
        TensorMetadata(name=name, datatype="FP32", shape=[-1, *spec.shape])
        for name, spec in v2_outputs(variant).items()
    ]
    return ModelMetadata(name=variant.name, versions=[MODEL_VERSION], platform=PLATFORM, inputs=inputs, outputs=outputs)


def model_config(settings: Settings, variant: Variant) -> dict[str, Any]:
    """Triton's model configuration, as much of it as clients such as perf_analyzer read."""
    size = image_size(variant)
    batching = settings.batching_for(variant.name)
    return {
        "name": variant.name,
        "platform": PLATFORM,
        "max_batch_size": settings.max_images_per_request,
        # Both inputs are optional: a request sends exactly one of them.
        "input": [
            {"name": IMAGE, "data_type": "TYPE_FP32", "dims": [3, size, size], "optional": True},
            {"name": IMAGE_BYTES, "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}, "optional": True},
        ],
        "output": [
            {"name": name, "data_type": "TYPE_FP32", "dims": list(spec.shape)}
            for name, spec in v2_outputs(variant).items()
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
