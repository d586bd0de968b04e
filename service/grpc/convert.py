"""gRPC messages to and from the protocol-neutral documents of service/oip.

An input's data comes as `raw_input_contents` (what tritonclient and perf_analyzer send: the same
little-endian, row-major bytes as HTTP's binary extension) or as typed `contents`, which is turned into
those bytes here, so that one path (oip.tensors) checks every tensor whichever transport carried it.
Outputs always go back as `raw_output_contents`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format
from pydantic import ValidationError

from ..errors import ServiceError
from ..oip import tensors
from ..oip.schemas import InferenceRequest, InputTensor, ModelMetadata, OutputTensor
from .protocol import grpc_service_pb2 as pb
from .protocol import model_config_pb2

# The typed contents field of each datatype this server takes (image: FP32, image_bytes: BYTES).
_CONTENTS = {"FP32": ("fp32_contents", "<f4")}


def parameters(entries: Mapping[str, Any]) -> dict[str, Any]:
    """A parameters map (InferParameter values) as the plain values the HTTP JSON would carry."""
    values: dict[str, Any] = {}
    for key, parameter in entries.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def infer_request(message: pb.ModelInferRequest) -> tuple[InferenceRequest, list[InputTensor], int]:
    """The request, its inputs with their data, and how many bytes of data they carry."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise ServiceError(
            400, f"the request has {len(message.inputs)} inputs but {len(raw)} raw_input_contents; send one for each"
        )
    request_parameters = parameters(message.parameters)
    # Outputs always travel as raw bytes: the size check must count 4 bytes a value, not HTTP JSON's.
    request_parameters["binary_data_output"] = True
    outputs = [
        {"name": o.name, "parameters": {k: v for k, v in parameters(o.parameters).items() if k != "binary_data"}}
        for o in message.outputs
    ]
    inputs = [
        {"name": i.name, "shape": list(i.shape), "datatype": i.datatype, "parameters": parameters(i.parameters)}
        for i in message.inputs
    ]
    try:
        request = InferenceRequest.model_validate(
            {"id": message.id or None, "parameters": request_parameters, "inputs": inputs, "outputs": outputs or None}
        )
    except ValidationError as exc:
        raise ServiceError(400, f"invalid inference request: {exc.errors()[0].get('msg')}") from None
    attached = []
    for index, (item, tensor) in enumerate(zip(request.inputs, message.inputs, strict=True)):
        tensors.check_input(item.name, item.datatype, item.shape, item.parameters)
        data = raw[index] if raw else _contents_bytes(tensor)
        attached.append(InputTensor(item.name, item.datatype, tuple(item.shape), item.parameters, data, None))
    return request, attached, sum(len(t.raw or b"") for t in attached)


def _contents_bytes(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """Typed contents as raw bytes; only FP32 and BYTES, the datatypes the models take."""
    if tensor.datatype == "BYTES":
        return tensors.packed_bytes(tensor.contents.bytes_contents)
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        # Checked against the model later; no data means an empty tensor, refused there with the shape's count.
        return b""
    return np.asarray(getattr(tensor.contents, field[0]), dtype=field[1]).tobytes()


def infer_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[OutputTensor]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id or "")
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        response.raw_output_contents.append(tensors.raw_bytes(output))
    return response


def model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(name=metadata.name, versions=metadata.versions, platform=metadata.platform)
    for tensor in metadata.inputs:
        response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    for tensor in metadata.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    return response


def model_config(config: dict[str, Any]) -> pb.ModelConfigResponse:
    """Triton's model configuration; oip.metadata writes it with the message's own field names."""
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return pb.ModelConfigResponse(config=message)
