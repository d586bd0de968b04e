"""An Open Inference Protocol inference request, from HTTP or gRPC: check its inputs and outputs, run it through
the core.

Each model takes exactly one of two inputs per request: `image`, FP32 [N, 3, H, W] already
preprocessed as the variant's manifest says, or `image_bytes`, BYTES [N, 1] of encoded images that the
server decodes and preprocesses exactly as the REST endpoints do. Every image joins the model's
batch queue on its own, so V2 and REST requests share ONNX Runtime runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import Core, resolution_for
from ..errors import ServiceError
from ..instance import ImageResult
from ..postprocess import softmax
from ..registry import LoadedModel
from ..store import Variant
from ..tasks import OUTPUT_ORDER, PROBABILITIES, OutputSpec, v2_outputs
from . import tensors
from .metadata import IMAGE, IMAGE_BYTES, default_outputs
from .schemas import InferenceRequest, InputTensor, OutputTensor

LABELLED = frozenset({"logits", PROBABILITIES})
# Parsing a big request takes milliseconds: past this size its inputs are converted in the codec pool, off the loop.
OFFLOAD_BYTES = 256 * 1024
# Converting a big tensor from JSON takes milliseconds: past this many values it runs in the codec pool.
OFFLOAD_VALUES = 64 * 1024
# An upper estimate of a float32 in JSON, as orjson writes it ("-0.12345678," is 12 characters).
JSON_BYTES_PER_VALUE = 16


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int | None  # top-k as "score:index:label" strings instead of the tensor


async def infer(
    core: Core,
    model: LoadedModel,
    request: InferenceRequest,
    inputs: list[InputTensor],
    started: float,
    offload: bool,
) -> list[OutputTensor]:
    """The requested outputs; `offload` converts the inputs in the codec pool (a large body's can take seconds)."""
    if len(inputs) != 1:
        names = ", ".join(repr(t.name) for t in inputs)
        raise ServiceError(400, f"send exactly one input, {IMAGE!r} or {IMAGE_BYTES!r}; got {names}")
    variant = model.variant
    specs = v2_outputs(variant)
    requested = requested_outputs(request, variant, specs)
    sources = tuple(o for o in OUTPUT_ORDER if any(specs[r.name].source == o for r in requested))
    tensor = inputs[0]
    images: Sequence[bytes | np.ndarray]
    if tensor.name == IMAGE:
        images, resolution = await _preprocessed(core, variant, tensor, request.parameters, offload)
    elif tensor.name == IMAGE_BYTES:
        images, resolution = await _encoded(core, variant, tensor, request.parameters, offload)
    else:
        raise ServiceError(400, f"unknown input {tensor.name!r}; {variant.name} takes {IMAGE!r} or {IMAGE_BYTES!r}")
    results = await core.run(model, images, resolution, sources, started)
    outputs = [_output_tensor(r, results, sources, specs[r.name].source, variant) for r in requested]
    _check_response_size(outputs, core.settings.max_response_bytes)
    return outputs


def requested_outputs(
    request: InferenceRequest, variant: Variant, specs: dict[str, OutputSpec]
) -> list[RequestedOutput]:
    """The outputs a request asks for, checked against the variant's `specs` (its V2 outputs)."""
    default_binary = _flag(request.parameters, "binary_data_output", "request parameter")
    if not request.outputs:
        return [RequestedOutput(name, default_binary, None) for name in default_outputs(variant)]
    requested: list[RequestedOutput] = []
    for output in request.outputs:
        if output.name not in specs:
            raise ServiceError(400, f"unknown output {output.name!r}; {variant.name} offers {', '.join(specs)}")
        if any(r.name == output.name for r in requested):
            raise ServiceError(400, f"output {output.name!r} is requested more than once")
        if any(key.startswith("shared_memory") for key in output.parameters):
            raise ServiceError(400, f"output {output.name!r}: shared memory is not supported by this server")
        binary = output.parameters.get("binary_data")
        binary = default_binary if binary is None else _flag(output.parameters, "binary_data", output.name)
        count = output.parameters.get("classification")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ServiceError(400, f"output {output.name!r}: classification must be a positive integer")
            if output.name not in LABELLED:
                raise ServiceError(400, f"output {output.name!r} has no classes; classify logits or probabilities")
        requested.append(RequestedOutput(output.name, binary, count))
    return requested


async def _preprocessed(
    core: Core, variant: Variant, tensor: InputTensor, parameters: dict[str, Any], offload: bool
) -> tuple[list[np.ndarray], int]:
    """The FP32 input's images, already preprocessed, and their size."""
    _check_datatype(tensor, "FP32")
    shape = tensor.shape
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] not in variant.resolutions:
        raise ServiceError(
            400,
            f"input {IMAGE!r} has shape {list(shape)}; {variant.name} takes [N, 3, S, S] "
            f"with S one of {list(variant.resolutions)}",
        )
    _check_batch(core, shape[0])
    requested = parameters.get("resolution")
    if requested is not None and requested != shape[2]:
        raise ServiceError(400, f"parameter resolution={requested!r} contradicts the input's size {shape[2]}")
    if offload or (tensor.raw is None and tensor.count > OFFLOAD_VALUES):
        batch = await core.in_pool(tensors.fp32_array, tensor)
    else:
        batch = tensors.fp32_array(tensor)
    return list(batch), shape[2]


async def _encoded(
    core: Core, variant: Variant, tensor: InputTensor, parameters: dict[str, Any], offload: bool
) -> tuple[list[bytes], int]:
    """The BYTES input's encoded images, and the size to preprocess them to."""
    _check_datatype(tensor, "BYTES")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise ServiceError(400, f"input {IMAGE_BYTES!r} has shape {list(tensor.shape)}; it takes [N, 1] or [N]")
    _check_batch(core, tensor.shape[0])
    resolution = resolution_for(variant, parameters.get("resolution"), status=400)
    images = await core.in_pool(tensors.bytes_elements, tensor) if offload else tensors.bytes_elements(tensor)
    return images, resolution


def _output_tensor(
    requested: RequestedOutput, results: list[ImageResult], sources: tuple[str, ...], source: str, variant: Variant
) -> OutputTensor:
    value = np.stack([result.outputs[sources.index(source)] for result in results])
    if requested.name == PROBABILITIES:
        value = softmax(value, axis=1).astype(np.float32)
    if requested.classification is None:
        return OutputTensor(requested.name, "FP32", value, value.shape, requested.binary)
    return tensors.classification(requested.name, value, requested.classification, variant.labels, requested.binary)


def _check_response_size(outputs: list[OutputTensor], limit: int) -> None:
    """Refuse an answer whose serialised size, estimated from its values, is over `limit` bytes."""
    size = 0
    for output in outputs:
        if isinstance(output.value, np.ndarray):
            size += output.value.size * (4 if output.binary else JSON_BYTES_PER_VALUE)
        else:
            size += sum(len(element) + 4 for element in output.value)
    if size > limit:
        raise ServiceError(
            400,
            f"the response would be about {size} bytes, over the server's limit of {limit} (max_response_bytes); "
            "ask for fewer images or outputs, or for binary data",
            code="response_too_large",
        )


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ServiceError(400, f"{where}: {key} must be true or false, got {value!r}")
    return value


def _check_datatype(tensor: InputTensor, expected: str) -> None:
    if tensor.datatype != expected:
        raise ServiceError(400, f"input {tensor.name!r} must be {expected}, got {tensor.datatype}")


def _check_batch(core: Core, count: int) -> None:
    limit = core.settings.max_images_per_request
    if not 1 <= count <= limit:
        raise ServiceError(400, f"a request carries 1 to {limit} images (max_batch_size), got {count}")
